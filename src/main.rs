//! The `userpipe` binary: everything is in the library; see `cli::main`.

fn main() -> std::process::ExitCode {
    userpipe::cli::main()
}
