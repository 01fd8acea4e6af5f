//! Every `cargo xtask ...` and `ktstr ...` command line in the README and
//! the guide's shell blocks is one the command line accepts: each is
//! parsed by the same parser the binary uses, so a renamed or removed flag
//! fails here before a reader copies it. (The guide's Rust examples are
//! compiled as doctests; see `src/guide.rs`.)

use std::path::Path;

/// Commands of `cargo xtask` that are the xtask's own, not the host
/// crate's command line.
const XTASK_ONLY: &[&str] = &["check-imports"];

/// The shell lines of `text`: fenced `sh` blocks, and (Markdown's other
/// form) blocks indented by four spaces; continuation lines ending in `\`
/// are joined.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    let mut pending = String::new();
    let mut prev_blank = true;
    let mut in_indented = false;
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(rest.trim().to_string()),
            };
            continue;
        }
        let shell = match &fence {
            Some(lang) => matches!(lang.as_str(), "sh" | "bash" | "shell"),
            None => {
                in_indented = line.starts_with("    ") && (prev_blank || in_indented);
                in_indented
            }
        };
        prev_blank = line.trim().is_empty();
        if !shell {
            continue;
        }
        let l = line.trim();
        if let Some(head) = l.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(l);
        out.push(std::mem::take(&mut pending));
    }
    out
}

/// `line`'s words after `cargo xtask` or `ktstr`, up to a comment or a
/// shell operator; `None` when it runs neither.
fn command_words(line: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words
        .windows(2)
        .position(|w| w == ["cargo", "xtask"])
        .map(|i| i + 2)
        .or_else(|| (words.first() == Some(&"ktstr")).then_some(1))?;
    let mut args = Vec::new();
    for w in &words[start..] {
        if w.starts_with('#') || ["&&", "||", ";", "|", ">", "2>&1"].contains(w) {
            break;
        }
        args.push(w.trim_matches(['"', '\'']).to_string());
    }
    Some(args)
}

#[test]
fn every_documented_command_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    let mut checked = 0;
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        for line in shell_lines(&text) {
            let Some(args) = command_words(&line) else {
                continue;
            };
            if args
                .first()
                .is_some_and(|c| XTASK_ONLY.contains(&c.as_str()))
            {
                continue;
            }
            checked += 1;
            let argv = std::iter::once("ktstr".to_string()).chain(args);
            if let Err(e) = ktstr_host::cli::parse_only(argv) {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                bad.push(format!("{}: `{line}`: {first}", f.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "commands that do not parse:\n{}",
        bad.join("\n")
    );
    assert!(checked >= 20, "only {checked} commands found in the docs");
    eprintln!("{checked} documented commands parse");
}

#[test]
fn the_extractor_finds_fenced_indented_and_continued_lines() {
    let text = "intro\n\n    cargo xtask vmtest --list   # comment\n\n```sh\ncargo xtask gauntlet \\\n  --runs 2\n```\n```toml\ncargo = 1\n```\n";
    let lines = shell_lines(text);
    assert_eq!(
        lines,
        [
            "cargo xtask vmtest --list   # comment",
            "cargo xtask gauntlet --runs 2"
        ]
    );
    assert_eq!(
        command_words(&lines[0]).unwrap(),
        ["vmtest", "--list"],
        "the comment is dropped"
    );
    // A wrong flag is caught.
    let argv = ["ktstr", "vmtest", "--no-such-flag"];
    assert!(ktstr_host::cli::parse_only(argv).is_err());
}
