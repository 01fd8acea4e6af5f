//! Each report page opened in headless Chromium (Debian's `chromium`,
//! which `cargo xtask setup` installs): it loads with no console message
//! and no failed load, and its screenshot is not blank. The pages and
//! screenshots are kept under `target/ktstr/screenshots/` for a person to
//! look at. Without Chromium the test prints a SKIP line and returns.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ktstr_host::html::{compare_page, run_page, sweep_page};
use serde_json::Value;

/// A page gets this long to load and be shot.
const LIMIT: Duration = Duration::from_secs(90);

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/report")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("a fixture")).expect("JSON")
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map_or_else(|| PathBuf::from("target"), |ws| ws.join("target"))
        });
    let dir = target.join("ktstr/screenshots");
    std::fs::create_dir_all(&dir).expect("creating the screenshots directory");
    dir
}

/// The browser window (and so the screenshot) for most pages.
const WINDOW: (u32, u32) = (1280, 1600);

/// Runs headless Chromium on `page` with `extra` arguments, in a fresh
/// profile, killed past [`LIMIT`]; its stdout and stderr.
fn chromium(page: &Path, window: (u32, u32), extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--window-size={},{}", window.0, window.1))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting chromium");
    // Read both pipes on threads so a full one cannot stall Chromium.
    let pipe = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let t0 = Instant::now();
    while child.try_wait().expect("waiting for chromium").is_none() {
        if t0.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took over {LIMIT:?} on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    )
}

/// Console messages, script errors and failed loads in Chromium's log.
fn page_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains(":CONSOLE")
                || l.contains("Uncaught")
                || l.contains("net::ERR_")
                || l.contains("Not allowed to load")
        })
        .collect()
}

/// The share of pixels that are not white in the PNG at `path`.
fn non_white_share(path: &Path) -> f64 {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let samples = info.color_type.samples();
    assert!(
        info.bit_depth == png::BitDepth::Eight && samples >= 3,
        "{:?} {:?}",
        info.color_type,
        info.bit_depth
    );
    let pixels = buf[..info.buffer_size()].chunks_exact(samples);
    let total = pixels.len().max(1);
    let coloured = pixels.filter(|p| p[..3].iter().any(|&c| c < 250)).count();
    coloured as f64 / total as f64
}

/// Writes `html` as `name`.html, opens it, and checks the log, the DOM
/// and the screenshot (of a `window`-sized top of the page); returns the
/// screenshot's path.
fn shoot(name: &str, html: &str, title: &str, window: (u32, u32)) -> PathBuf {
    let dir = shots_dir();
    let page = dir.join(format!("{name}.html"));
    std::fs::write(&page, html).expect("writing the page");
    let png = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    let (dom, log) = chromium(
        &page,
        window,
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--dump-dom".into(),
        ],
    );
    assert!(
        page_errors(&log).is_empty(),
        "{name}: {:?}",
        page_errors(&log)
    );
    let head = &dom[..dom.len().min(2000)];
    assert!(
        dom.contains(title),
        "{name}: the DOM lacks its title:\n{head}"
    );
    assert!(
        dom.contains("</svg>") || name == "compare",
        "{name}: the DOM lacks its charts:\n{head}"
    );
    let (_, log) = chromium(&page, window, &[format!("--screenshot={}", png.display())]);
    assert!(png.is_file(), "{name}: no screenshot\n{log}");
    let share = non_white_share(&png);
    assert!(
        share > 0.01,
        "{name}: the screenshot is blank ({share:.4} not white)"
    );
    println!(
        "{name}: {} ({:.1}% not white)",
        png.display(),
        share * 100.0
    );
    png
}

#[test]
fn each_page_loads_cleanly_and_is_not_blank() {
    if !ktstr_host::skip::tool("chromium", "chromium") {
        return;
    }
    // The check sees errors: a page whose script throws is caught.
    let dir = shots_dir();
    let bad = dir.join("console-error-probe.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><body><script>notDefined()</script></body></html>",
    )
    .expect("writing the probe");
    let (_, log) = chromium(
        &bad,
        WINDOW,
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--dump-dom".into(),
        ],
    );
    assert!(
        !page_errors(&log).is_empty(),
        "a throwing script went unseen:\n{log}"
    );
    let _ = std::fs::remove_file(&bad);

    let title = |doc: &Value| format!("ktstr run: {}", doc["scenario"].as_str().unwrap_or("n/a"));
    let run = fixture("run.json");
    shoot("run", &run_page(&run), &title(&run), WINDOW);
    let failed = fixture("run-synthetic.json");
    shoot("run-failed", &run_page(&failed), &title(&failed), WINDOW);
    let sweep = sweep_page(&fixture("gauntlet.json"));
    shoot("gauntlet", &sweep, "ktstr gauntlet", WINDOW);
    shoot(
        "compare",
        &compare_page(&fixture("compare.json")),
        "ktstr compare",
        WINDOW,
    );
    // The README's pictures: the top of the run page (header, checks,
    // timeline, heat strip, CPU share) and of the gauntlet page (totals
    // and matrix), from the real recordings.
    shoot("readme-run", &run_page(&run), &title(&run), (1280, 1380));
    shoot("readme-gauntlet", &sweep, "ktstr gauntlet", (1280, 490));
}
