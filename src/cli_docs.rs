//! Shell completions and man pages, generated from a binary's command-line
//! definition (clap), so they never drift from the flags the program takes.
//! Both binaries expose them: `nkv completions bash`, `nkv man --dir DIR`,
//! and the same for `nkv-server`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// Writes the completion script of `command` for `shell` to `out`.
pub fn completions(mut command: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes the man page of `command` itself (section 1) to `out`.
pub fn man_page(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}

/// Writes one page per command and subcommand (`nkv.1`, `nkv-get.1`, …)
/// into `dir`, creating it; returns the files written.
pub fn man_pages(command: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(command, dir)?;
    let mut written = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            written.push(path);
        }
    }
    written.sort();
    Ok(written)
}
