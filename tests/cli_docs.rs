//! Shell completions and man pages come from the binaries' own flag
//! definitions: bash loads the completion script and completes real
//! subcommands; the man pages name every subcommand and flag `--help`
//! shows, and render.

use std::path::Path;
use std::process::{Command, Stdio};

/// The binaries and a subcommand and flag each must know.
const BINARIES: [(&str, &str, &str); 1] =
    [(env!("CARGO_BIN_EXE_nkv-server"), "repair", "--data-dir")];

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn name(bin: &str) -> &str {
    Path::new(bin).file_name().unwrap().to_str().unwrap()
}

#[test]
fn bash_completes_subcommands_from_the_generated_script() {
    for (bin, subcommand, _) in BINARIES {
        let name = name(bin);
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("completion.bash");
        std::fs::write(&script, run(bin, &["completions", "bash"])).unwrap();
        // Load it, then ask the completion function what follows "NAME ".
        let probe = format!(
            "source {script}; complete -p {name} >/dev/null || exit 3; \
             COMP_WORDS=({name} ''); COMP_CWORD=1; COMP_LINE='{name} '; COMP_POINT=${{#COMP_LINE}}; \
             $(complete -p {name} | sed -E 's/.*-F ([^ ]+).*/\\1/') {name} '' {name}; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script = script.display()
        );
        let out = Command::new("bash")
            .args(["-c", &probe])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: the script does not load");
        let words = String::from_utf8(out.stdout).unwrap();
        assert!(
            words.lines().any(|w| w == subcommand),
            "{name}: completing after `{name} ` offers no {subcommand}: {words}"
        );
        for shell in ["zsh", "fish"] {
            assert!(run(bin, &["completions", shell]).contains(subcommand));
        }
    }
}

#[test]
fn man_pages_name_every_flag_and_render() {
    for (bin, subcommand, flag) in BINARIES {
        let name = name(bin);
        let page = run(bin, &["man"]);
        assert!(page.contains(&format!(".TH {name} 1")), "{page}");
        // Every long flag of --help is on the page (roff escapes '-').
        let help = run(bin, &["--help"]);
        for word in help.split_whitespace().filter(|w| w.starts_with("--")) {
            let word = word.trim_end_matches([',', '.', ']']);
            let escaped = word.replace('-', "\\-");
            assert!(
                page.contains(&escaped),
                "{name}: {word} is missing from the man page"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let listed = run(bin, &["man", "--dir", dir.path().to_str().unwrap()]);
        let sub_page = dir.path().join(format!("{name}-{subcommand}.1"));
        assert!(listed.contains(sub_page.to_str().unwrap()), "{listed}");
        let sub = std::fs::read_to_string(&sub_page).unwrap();
        assert!(sub.contains(&flag.replace('-', "\\-")), "{sub}");
        // It renders (where man is installed).
        if Command::new("man").arg("--version").output().is_ok() {
            let out = Command::new("man")
                .arg("-l")
                .arg(dir.path().join(format!("{name}.1")))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(out.status.success(), "man -l {name}.1 failed");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(subcommand), "{text}");
        } else {
            println!("SKIPPED rendering: man is not installed");
        }
    }
}
