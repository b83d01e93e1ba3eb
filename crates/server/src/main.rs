//! The `rakor` binary: parses the command line and runs the subcommand (see `cli.rs`).

fn main() -> std::process::ExitCode {
    rakor_server::cli::main()
}
