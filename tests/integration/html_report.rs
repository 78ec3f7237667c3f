//! `report --html` (issue 21): one self-contained page for the post-mortem,
//! checked in the program people open it with (headless Chromium): it
//! renders with no console error and no network request, prints on A4
//! landscape, and untrusted cells stay text.

use crate::harness::{sim_config, start, stderr_of, stdout_of, Workdir};
use midas_cancel::sim::Faults;
use std::net::TcpListener;
use std::process::Command;

/// Headless Chromium, when this machine has it (`bash .ci/run` installs it;
/// CI must have it, so there its absence fails the test).
fn chromium() -> Option<&'static str> {
    let found = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("chromium is missing: `bash .ci/run` installs it");
    }
    found.then_some("chromium")
}

/// Chromium on `page` with `args`; any network request goes to a proxy on
/// loopback that this test watches. Returns (stdout, stderr, the requests
/// the page made). Chromium's own calls home (time, component updates,
/// accounts, on Google's hosts, whatever the flags) are not the page's.
fn open_in_chromium(w: &Workdir, page: &str, args: &[&str]) -> (String, String, Vec<String>) {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = proxy.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = seen.clone();
    std::thread::spawn(move || {
        for stream in proxy.incoming().flatten() {
            use std::io::Read as _;
            let mut stream = stream;
            stream.set_read_timeout(Some(std::time::Duration::from_millis(500))).ok();
            let mut head = [0u8; 300];
            let n = stream.read(&mut head).unwrap_or(0);
            let line = String::from_utf8_lossy(&head[..n]).lines().next().unwrap_or("").to_string();
            recorder.lock().unwrap().push(line);
        }
    });
    let profile = w.path("chromium-profile");
    let out = Command::new(chromium().unwrap())
        .current_dir(w.dir.path())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--proxy-server=http://{addr}"))
        .arg("--proxy-bypass-list=<-loopback>")
        .args(args)
        .arg(format!("file://{}", w.path(page).display()))
        .output()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let own = ["google.com", "googleapis.com", "gstatic.com", "gvt1.com"];
    let page_requests: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| {
            let target = line.split(' ').nth(1).unwrap_or("");
            let host = target.trim_start_matches("http://").split(['/', ':']).next().unwrap_or("");
            !own.iter().any(|o| host == *o || host.ends_with(&format!(".{o}")))
        })
        .cloned()
        .collect();
    (stdout_of(&out), stderr_of(&out), page_requests)
}

/// A run whose rows carry HTML, under a server limit (pace changes) with a
/// log: the page's raw material.
fn hostile_run(w: &Workdir) {
    let mut text = String::from("bill_no,openid,zone_id,amount_fen,note\n");
    text.push_str("A1,oU1,1,100,\"<script>alert(1)</script>\"\n");
    text.push_str("\"B\"\"><img src=x onerror=alert(2)>\",oU2,1,200,x\n");
    text.push_str("C1,\"<script>alert(3)</script>\",1,300,y\n");
    for i in 1..=200 {
        text.push_str(&format!("D{i:04},oUSER{i},1,{i},n\n"));
    }
    w.write("in.csv", text);
    let mut c = sim_config();
    c.faults = Faults { frequency_limit: Some(60), ..Faults::default() };
    let sim = start(c);
    let out = w.live("in.csv", "out.csv", &sim).args(["--rate", "120", "--log", "run.jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
}

#[test]
fn the_post_mortem_page_is_one_file_that_keeps_untrusted_cells_text() {
    let w = Workdir::new();
    hostile_run(&w);
    let out = w
        .cmd()
        .args(["report", "out.csv", "--html", "report.html", "--log", "run.jsonl", "--sum", "amount_fen"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the verdict as exit status: {}", stderr_of(&out));
    let page = std::fs::read_to_string(w.path("report.html")).unwrap();
    // Self-contained: nothing to fetch, nothing to run.
    for banned in ["<script", "<img", "<link", " src=\"", " href=\"", "url(", "@import", "https://"] {
        assert!(!page.contains(banned), "the page has `{banned}`");
    }
    // What each part shows.
    for want in [
        "needs attention",
        "Σ amount_fen",
        "What the run was",
        "production",
        "Requests per second, by outcome",
        "Pace: asked for",
        "frequency limit: settle below the accepted rate",
        "Latency: p50",
        "Errcodes",
        "45009",
        "Rows that need attention (2)",
        "--only invalid_input -o retry.csv",
    ] {
        assert!(page.contains(want), "the page shows `{want}`");
    }
    // Hostile cells arrive escaped.
    assert!(page.contains("&lt;img src=x onerror=alert(2)&gt;"), "bill_no as text");
    assert!(page.contains("&lt;script&gt;alert(3)&lt;/script&gt;"), "errmsg as text");
    // Never overwritten; a wrong name is refused.
    let again = w.cmd().args(["report", "out.csv", "--html", "report.html"]).output().unwrap();
    assert!(stderr_of(&again).contains("choose another --html name"), "{}", stderr_of(&again));
    let wrong = w.cmd().args(["report", "out.csv", "--html", "report.txt"]).output().unwrap();
    assert_eq!(wrong.status.code(), Some(2));

    let Some(_) = chromium() else {
        eprintln!("skipped the browser checks: no chromium here (bash .ci/run installs it)");
        return;
    };
    // Rendered: the DOM holds no element the cells tried to inject.
    let (dom, log, requests) = open_in_chromium(&w, "report.html", &["--dump-dom"]);
    assert!(requests.is_empty(), "the page made network requests: {requests:?}");
    assert!(dom.contains("<h1>midas-cancel report</h1>"), "{dom:.300}");
    assert!(!dom.contains("<img") && !dom.contains("<script"), "an injected element: {dom}");
    assert!(dom.contains("&lt;img src=x onerror=alert(2)&gt;"), "shown as text");
    for bad in ["CONSOLE", "Uncaught", "Refused to"] {
        assert!(!log.contains(bad), "a console message: {log}");
    }
    // A screenshot, and a print on A4 landscape.
    let (_, log, requests) = open_in_chromium(&w, "report.html", &["--screenshot=shot.png", "--window-size=1000,1400"]);
    assert!(requests.is_empty(), "{requests:?} {log}");
    let png = std::fs::read(w.path("shot.png")).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "{} bytes", png.len());
    let (_, log, _) = open_in_chromium(&w, "report.html", &["--print-to-pdf=report.pdf", "--no-pdf-header-footer"]);
    assert!(w.path("report.pdf").exists(), "{log}");
    let info = stdout_of(&Command::new("pdfinfo").arg(w.path("report.pdf")).output().unwrap());
    assert!(info.contains("841.92 x 59") && info.contains("(A4)"), "A4 landscape: {info}");
    let text = stdout_of(
        &Command::new("pdftotext").args(["-layout", "report.pdf", "-"]).current_dir(w.dir.path()).output().unwrap(),
    );
    for want in ["Rows that need attention", "Latency", "C1"] {
        assert!(text.contains(want), "`{want}` is printed: {text:.2000}");
    }
}

#[test]
fn a_dry_run_and_a_run_without_log_have_pages_too() {
    let w = Workdir::new();
    w.orders("in.csv", 5);
    w.dry_run("in.csv", "dry.csv").assert().code(0);
    let out = w.cmd().args(["report", "dry.csv", "--html", "dry.html"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let page = std::fs::read_to_string(w.path("dry.html")).unwrap();
    assert!(page.contains("dry run (nothing sent)") && page.contains("None: every row is done."), "{page:.500}");
    assert!(!page.contains("Requests per second"), "no timeline without --log");
    // --log needs --html.
    let out = w.cmd().args(["report", "dry.csv", "--log", "x.jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
