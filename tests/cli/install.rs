//! Installed like a command-line tool: completion scripts generated from the
//! real flags (bash completes `serve --max` to serve's flags), and the systemd
//! units in `contrib/` pass `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

use crate::support::*;

#[test]
fn completion_scripts_come_from_the_real_flags_and_a_bad_shell_exits_2() {
    let home = Home::new();
    for (shell, flag) in [
        ("bash", "--max-queue"),
        ("zsh", "--max-queue"),
        ("fish", "-l max-queue"),
    ] {
        let r = run(&home, &["completions", shell], "");
        r.ok().out_has(flag).out_has("serve");
        assert!(r.stderr.is_empty(), "{shell}: {}", r.stderr);
    }
    // bash itself completes `synapticllamas serve --max` from the script.
    let script = run(&home, &["completions", "bash"], "").stdout;
    let file = home.path().join("synapticllamas.bash");
    std::fs::write(&file, script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(synapticllamas serve --max); COMP_CWORD=2; \
             COMP_LINE='synapticllamas serve --max'; COMP_POINT=${{#COMP_LINE}}; \
             _synapticllamas synapticllamas --max serve; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .expect("bash runs");
    let offered = String::from_utf8_lossy(&out.stdout);
    let mut words: Vec<&str> = offered.split_whitespace().collect();
    words.sort();
    assert_eq!(
        words,
        ["--max-body-mb", "--max-connections", "--max-queue"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = run(&home, &["completions", "tcsh"], "");
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let first = bad.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("tcsh"), "{}", bad.stderr);
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
}

#[test]
fn the_systemd_units_in_contrib_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian's `systemd` package; \
             scripts/setup.sh installs it)"
        );
        return;
    }
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for name in [
        "synapticllamas-serve.service",
        "synapticllamas-rpc-register@.service",
    ] {
        let text = std::fs::read_to_string(contrib.join(name)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/local/bin/synapticllamas "),
            "{name} runs the installed binary"
        );
        assert!(text.contains("KillSignal=SIGTERM"), "{name}");
        assert!(text.contains("Restart=on-failure"), "{name}");
        // `verify` checks that ExecStart is executable: point it at this build.
        let here = dir.path().join(name);
        std::fs::write(&here, text.replace("/usr/local/bin/synapticllamas", BIN)).unwrap();
        units.push(here);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("synapticllamas"),
        "systemd-analyze verify: {:?}\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}
