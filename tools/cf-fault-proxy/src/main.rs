//! `cf-fault-proxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:PORT`
//! prints `listening on http://ADDR` first, then serves until killed.

use std::io::Write;

fn main() {
    let (mut listen, mut upstream) = ("127.0.0.1:0".to_owned(), None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--upstream", Some(v)) => upstream = Some(v),
            _ => exit(&format!(
                "usage: cf-fault-proxy [--listen ADDR] --upstream URL (bad {flag:?})"
            )),
        }
    }
    let upstream = upstream.unwrap_or_else(|| exit("--upstream is required"));
    let proxy = tasks_cf_fault_proxy::Proxy::start(&listen, &upstream)
        .unwrap_or_else(|e| exit(&format!("cannot listen on {listen:?}: {e}")));
    println!("listening on {}", proxy.url());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn exit(msg: &str) -> ! {
    eprintln!("cf-fault-proxy: {msg}");
    std::process::exit(2)
}
