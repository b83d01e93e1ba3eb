//! What the media core reads from a publisher's offer itself, from the SDP parser's result
//! (never from the raw text, which a client can space and case to slip past a text check):
//! how many media sections send media (the track limit) and the simulcast layers per section.

use rtc::sdp::SessionDescription;

/// Media sections of any kind an offer may have at most (tracks, data channel, and the
/// inactive leftovers of earlier tracks), whatever the track limit: bounds the work one offer
/// can cause.
pub const MAX_MEDIA_SECTIONS: usize = 64;

/// Audio/video sections that send media (not `inactive`/`recvonly`).
pub fn sending_media(sd: &SessionDescription) -> usize {
    sd.media_descriptions
        .iter()
        .filter(|m| {
            let kind = m.media_name.media.trim();
            (kind.eq_ignore_ascii_case("audio") || kind.eq_ignore_ascii_case("video"))
                && m.attribute("inactive").is_none()
                && m.attribute("recvonly").is_none()
        })
        .count()
}

/// Parse an offer the way the `rtc` core will, and count its sending media sections (`None`:
/// not an SDP the core accepts). Public for the fuzzers.
pub fn count_sending_media(sdp: &str) -> Option<usize> {
    let desc = rtc::peer_connection::sdp::RTCSessionDescription::offer(sdp.to_owned()).ok()?;
    let sd = desc.unmarshal().ok()?;
    Some(sending_media(&sd))
}

/// Simulcast layers per media section of an offer: `(mid, rids)` from `a=simulcast:send`, in
/// the order listed there, which Rakor's clients keep low to high (`q;h;f`). Alternatives
/// (`q,x`) count by their first rid; a paused rid (`~h`) still counts. At most 4 layers.
pub fn simulcast_layers(sd: &SessionDescription) -> Vec<(String, Vec<String>)> {
    sd.media_descriptions
        .iter()
        .filter_map(|m| {
            let mid = m.attribute("mid").flatten()?.trim().to_owned();
            let value = m.attribute("simulcast").flatten()?;
            let list = value
                .trim()
                .strip_prefix("send")?
                .split_whitespace()
                .next()?;
            let rids: Vec<String> = list
                .split(';')
                .filter_map(|alt| alt.split(',').next())
                .map(|r| r.trim_start_matches('~').to_owned())
                .filter(|r| !r.is_empty() && r.len() <= 16)
                .take(4)
                .collect();
            (rids.len() > 1).then_some((mid, rids))
        })
        .collect()
}

/// Check `offer.tracks` against the offer's media sections: every declared `mid` names one
/// audio/video section, once, and its source fits that section's kind (`screen` on a video
/// section, `screen_audio` on an audio one…). The declared `(mid, source)` pairs, or why not.
pub fn declared_sources(
    sd: &SessionDescription,
    declared: &[rakor_proto::TrackDeclaration],
) -> Result<Vec<(String, rakor_proto::TrackSource)>, String> {
    use rakor_proto::TrackKind;
    if declared.len() > MAX_MEDIA_SECTIONS {
        return Err(format!(
            "{} track declarations; at most {MAX_MEDIA_SECTIONS}",
            declared.len()
        ));
    }
    let mut out: Vec<(String, rakor_proto::TrackSource)> = Vec::with_capacity(declared.len());
    for d in declared {
        if out.iter().any(|(m, _)| *m == d.mid) {
            return Err(format!("mid \"{}\" declared twice in \"tracks\"", d.mid));
        }
        let kind = sd.media_descriptions.iter().find_map(|m| {
            let mid = m.attribute("mid").flatten()?.trim();
            if mid != d.mid {
                return None;
            }
            let media = m.media_name.media.trim();
            if media.eq_ignore_ascii_case("audio") {
                Some(TrackKind::Audio)
            } else if media.eq_ignore_ascii_case("video") {
                Some(TrackKind::Video)
            } else {
                None
            }
        });
        let Some(kind) = kind else {
            let shown: String = d.mid.chars().take(32).collect();
            return Err(format!(
                "\"tracks\" names mid \"{shown}\", which is no audio or video section of the offer"
            ));
        };
        if d.source.kind() != kind {
            return Err(format!(
                "source \"{}\" does not fit the {} section with mid \"{}\"",
                d.source.as_str(),
                match kind {
                    TrackKind::Audio => "audio",
                    TrackKind::Video => "video",
                },
                d.mid
            ));
        }
        out.push((d.mid.clone(), d.source));
    }
    Ok(out)
}

/// [`simulcast_layers`] of an SDP text (empty if it does not parse). Public for the fuzzers.
pub fn simulcast_rids(sdp: &str) -> Vec<(String, Vec<String>)> {
    rtc::peer_connection::sdp::RTCSessionDescription::offer(sdp.to_owned())
        .ok()
        .and_then(|d| d.unmarshal().ok())
        .map(|sd| simulcast_layers(&sd))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn counts_sending_media_sections() {
        let sdp = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        );
        assert_eq!(count_sending_media(&sdp), Some(2));
        assert_eq!(count_sending_media("hello"), None);
        assert_eq!(count_sending_media(HEAD), Some(0));
    }

    #[test]
    fn spacing_does_not_hide_a_section_from_the_limit() {
        // `m= audio` is what the parser reads as audio; a text check on "m=audio" missed it.
        let one = "m= audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n";
        let sdp = format!("{HEAD}{}", one.repeat(6));
        if let Some(n) = count_sending_media(&sdp) {
            assert_eq!(n, 6, "every section the parser understood is counted");
        }
    }

    #[test]
    fn simulcast_rids_in_offer_order_per_media_section() {
        let sdp = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:q send\r\na=rid:h send\r\n\
             a=rid:f send\r\na=simulcast:send q;~h;f,x\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=simulcast:send only\r\n"
        );
        assert_eq!(
            simulcast_rids(&sdp),
            vec![(
                "1".to_owned(),
                vec!["q".to_owned(), "h".to_owned(), "f".to_owned()]
            )]
        );
        assert!(simulcast_rids("").is_empty());
    }
}
