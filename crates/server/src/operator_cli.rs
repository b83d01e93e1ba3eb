//! `rakor operator add --username U [--password-stdin] [--reset]`: create a console operator (or
//! set a new password with `--reset`). The password is asked twice on the terminal (not echoed)
//! or read as the first line of stdin with `--password-stdin`; it never appears in arguments,
//! the environment or logs.

use crate::cli::ConfigArgs;
use crate::config::CliOverrides;
use clap::{Args, Subcommand};
use std::io::BufRead as _;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Create an operator account (or reset its password with --reset).
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Login name: 3-64 characters of a-z, 0-9, '.', '_' and '-'.
    #[arg(long)]
    pub username: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// Set a new password for an existing operator.
    #[arg(long)]
    pub reset: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
}

fn read_password(from_stdin: bool) -> Result<String, String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let first = rpassword::prompt_password("Password (at least 10 characters): ").map_err(|e| {
        format!("cannot read the password: {e} (use --password-stdin without a terminal)")
    })?;
    let again = rpassword::prompt_password("Repeat the password: ")
        .map_err(|e| format!("cannot read the password: {e}"))?;
    if first != again {
        return Err("the passwords differ".into());
    }
    Ok(first)
}

pub fn run(cmd: OperatorCommand) -> ExitCode {
    let OperatorCommand::Add(args) = cmd;
    let config = match crate::cli::load_config(&args.config, CliOverrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let password = match read_password(args.password_stdin) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match crate::cli::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        crate::signing_key::ensure_data_dir(&config.server.data_dir).map_err(|e| e.to_string())?;
        // Not `open_session_manager`: a running server's open attendance must stay open.
        let (store, path) = crate::storage::open_store(&config)
            .await
            .map_err(|e| e.to_string())?;
        let m = rakor_session::SessionManager::new(store, Default::default())
            .map_err(|e| e.to_string())?;
        let op = m
            .add_operator(&args.username, &password, args.reset)
            .await
            .map_err(|e| match e {
                rakor_session::SessionError::Conflict(m) => {
                    format!("{m} (use --reset to set a new password)")
                }
                other => other.to_string(),
            })?;
        Ok::<_, String>((op, path))
    });
    match result {
        Ok((op, path)) => {
            println!(
                "operator \"{}\" {} in {}; log in at {}/console",
                op.username,
                if args.reset { "updated" } else { "created" },
                path,
                config.public_base_url(config.server.listen)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let invalid =
                e.contains("username:") || e.contains("password:") || e.contains("already exists");
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}
