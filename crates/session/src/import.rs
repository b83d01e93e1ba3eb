//! Bulk import of sites from CSV (as saved by Excel or LibreOffice): a header row naming the
//! columns (`name,kind,contact_person,phone`, or in Indonesian `nama,jenis,kontak,telepon`),
//! comma or semicolon separated, optional UTF-8 BOM. Every row is validated before anything is
//! stored; an error names the line.

use crate::error::{Result, SessionError};
use crate::model::{name_key, validate_site, Personal, SiteInput, SiteKind};

/// Most rows in one import.
pub const MAX_ROWS: usize = 2000;

fn column(header: &str) -> Option<usize> {
    match header.trim().to_lowercase().as_str() {
        "name" | "nama" | "lokasi" => Some(0),
        "kind" | "jenis" => Some(1),
        "contact_person" | "contact" | "kontak" | "narahubung" => Some(2),
        "phone" | "telepon" | "telp" | "hp" => Some(3),
        _ => None,
    }
}

/// Parse and validate the CSV text into sites (nothing stored).
pub fn parse_sites_csv(text: &str) -> Result<Vec<SiteInput>> {
    let text = text.trim_start_matches('\u{feff}');
    let first = text.lines().next().unwrap_or_default();
    let delim = if first.matches(';').count() > first.matches(',').count() {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| SessionError::invalid("csv", format!("cannot read the header row: {e}")))?
        .clone();
    let mut map = [None; 4];
    for (i, h) in headers.iter().enumerate() {
        match column(h) {
            Some(c) => map[c] = Some(i),
            None => {
                return Err(SessionError::invalid(
                    "csv",
                    format!("unknown column \"{h}\" (expected name, kind, contact_person, phone)"),
                ))
            }
        }
    }
    let (Some(name_col), Some(kind_col)) = (map[0], map[1]) else {
        return Err(SessionError::invalid(
            "csv",
            "the header must name the columns name and kind",
        ));
    };
    let mut out: Vec<SiteInput> = Vec::new();
    for (n, rec) in reader.records().enumerate() {
        let line = n + 2;
        let rec = rec.map_err(|e| SessionError::invalid("csv", format!("line {line}: {e}")))?;
        if rec.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if out.len() >= MAX_ROWS {
            return Err(SessionError::invalid(
                "csv",
                format!("more than {MAX_ROWS} rows"),
            ));
        }
        let get = |c: Option<usize>| c.and_then(|i| rec.get(i)).unwrap_or("").to_owned();
        let kind_text = get(Some(kind_col));
        let kind = SiteKind::parse(&kind_text).ok_or_else(|| {
            SessionError::invalid(
                "csv",
                format!("line {line}: kind \"{kind_text}\" is not one of opd, kecamatan, puskesmas, kelurahan, other"),
            )
        })?;
        let site = validate_site(&SiteInput {
            name: get(Some(name_col)),
            kind,
            contact_person: Personal(get(map[2])),
            phone: Personal(get(map[3])),
            active: Some(true),
        })
        .map_err(|e| SessionError::invalid("csv", format!("line {line}: {e}")))?;
        if out
            .iter()
            .any(|s| name_key(&s.name) == name_key(&site.name))
        {
            return Err(SessionError::invalid(
                "csv",
                format!("line {line}: \"{}\" appears twice in the file", site.name),
            ));
        }
        out.push(site);
    }
    if out.is_empty() {
        return Err(SessionError::invalid("csv", "no rows to import"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reads_excel_style_files() {
        let text = "\u{feff}nama;jenis;kontak;telepon\r\nDinas Perhubungan;OPD;Pak Budi;0811-1\r\nKecamatan Taman;kecamatan;;\r\n";
        let sites = parse_sites_csv(text).unwrap();
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].kind, SiteKind::Opd);
        assert_eq!(sites[1].name, "Kecamatan Taman");
        let plain = "name,kind\n\"RSUD dr. Ashari, Pemalang\",other\n";
        assert_eq!(
            parse_sites_csv(plain).unwrap()[0].name,
            "RSUD dr. Ashari, Pemalang"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("name,kind\nA,opd\nB,bank\n", "line 3"),
            ("name,kind\nA,opd\na,opd\n", "line 3"),
            ("name,colour\nA,red\n", "unknown column"),
            ("name\nA\n", "name and kind"),
            ("name,kind\n", "no rows"),
            ("name,kind\n,opd\n", "line 2"),
        ];
        for (text, want) in cases {
            let e = parse_sites_csv(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
