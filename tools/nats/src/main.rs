//! `tasks-nats`: publish task events without the NATS CLI.
//!
//! ```text
//! tasks-nats [--server URL] pub SUBJECT PAYLOAD [-H Name:Value]...
//! tasks-nats [--server URL] request SUBJECT PAYLOAD [-H Name:Value]... [--timeout-ms N]
//! tasks-nats [--server URL] burst --count N [--prefix P] [--subject S]
//!            [--request | --acked FILE | --jetstream] [--in-flight N]
//! tasks-nats [--server URL] latency --http HOST:PORT [--count N] [--prefix P] [--jetstream]
//! ```
//! `PAYLOAD` may be `@file` to send a file's bytes. The server defaults to
//! `$NATS_URL`, else `nats://127.0.0.1:4222`. `burst` publishes N
//! `tasks.created` events (`{"id":"<P><i>","title":"Task <i>"}`) as fast as
//! it can and prints how long it took; with `--request` it awaits each ack
//! (`--in-flight`, default 8) and fails if any is not `{"ok":true}`; with
//! `--acked FILE` it awaits acks too but only writes the ids acknowledged
//! with `{"ok":true}` to FILE (for tests that stop the consumer mid-burst);
//! with `--jetstream` it publishes to JetStream and awaits every stream
//! acknowledgement (`--in-flight`, default 256), failing if one is missing.
//! `latency` publishes one `tasks.created` at a time (`--jetstream`: awaiting
//! the stream's acknowledgement, counted in the time) and polls
//! `GET /api/tasks/<id>` on HOST:PORT until it answers 200, then prints the
//! publish→visible p50/p99/max over N events.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::HeaderMap;
use futures::StreamExt;

struct Args {
    server: String,
    command: String,
    rest: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut server = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mut it = std::env::args().skip(1).peekable();
    if it.peek().map(String::as_str) == Some("--server") {
        it.next();
        server = it.next().context("--server needs a URL")?;
    }
    let command = it
        .next()
        .context("usage: tasks-nats [--server URL] pub|request|burst …")?;
    Ok(Args {
        server,
        command,
        rest: it.collect(),
    })
}

fn payload(arg: &str) -> anyhow::Result<Vec<u8>> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}")),
        None => Ok(arg.as_bytes().to_vec()),
    }
}

/// SUBJECT PAYLOAD, then `-H Name:Value` and `--timeout-ms N` options.
fn message_args(rest: &[String]) -> anyhow::Result<(String, Vec<u8>, HeaderMap, Duration)> {
    let [subject, body, opts @ ..] = rest else {
        bail!("expected SUBJECT PAYLOAD")
    };
    let mut headers = HeaderMap::new();
    let mut timeout = Duration::from_secs(5);
    let mut opts = opts.iter();
    while let Some(o) = opts.next() {
        match o.as_str() {
            "-H" => {
                let h = opts.next().context("-H needs Name:Value")?;
                let (name, value) = h.split_once(':').context("-H needs Name:Value")?;
                headers.insert(name.trim(), value.trim());
            }
            "--timeout-ms" => {
                timeout =
                    Duration::from_millis(opts.next().context("--timeout-ms needs N")?.parse()?);
            }
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok((subject.clone(), payload(body)?, headers, timeout))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    // Requests carry their own deadline (--timeout-ms), not the client's 10 s default.
    let client = async_nats::ConnectOptions::new()
        .request_timeout(None)
        .connect(&args.server)
        .await
        .with_context(|| format!("connecting to {}", args.server))?;
    match args.command.as_str() {
        "pub" => {
            let (subject, body, headers, _) = message_args(&args.rest)?;
            client
                .publish_with_headers(subject, headers, body.into())
                .await?;
            client.flush().await?;
        }
        "request" => {
            let (subject, body, headers, timeout) = message_args(&args.rest)?;
            let reply = tokio::time::timeout(
                timeout,
                client.request_with_headers(subject, headers, body.into()),
            )
            .await
            .context("no reply in time")??;
            println!("{}", String::from_utf8_lossy(&reply.payload));
        }
        "burst" => burst(&client, &args.rest).await?,
        "latency" => latency(&client, &args.rest).await?,
        other => bail!("unknown command {other:?}: expected pub, request or burst"),
    }
    Ok(())
}

async fn burst(client: &async_nats::Client, rest: &[String]) -> anyhow::Result<()> {
    let mut count = 1_000usize;
    let mut prefix = "b-".to_owned();
    let mut subject = "tasks.created".to_owned();
    let mut request = false;
    let mut acked_file: Option<String> = None;
    let mut in_flight = None;
    let mut jetstream = false;
    let mut it = rest.iter();
    while let Some(o) = it.next() {
        match o.as_str() {
            "--count" => count = it.next().context("--count needs N")?.parse()?,
            "--prefix" => prefix = it.next().context("--prefix needs P")?.clone(),
            "--subject" => subject = it.next().context("--subject needs S")?.clone(),
            "--request" => request = true,
            "--acked" => {
                acked_file = Some(it.next().context("--acked needs FILE")?.clone());
                request = true;
            }
            "--in-flight" => {
                in_flight = Some(it.next().context("--in-flight needs N")?.parse()?);
            }
            "--jetstream" => jetstream = true,
            other => bail!("unknown option {other:?}"),
        }
    }
    let in_flight = in_flight.unwrap_or(if jetstream { 256 } else { 8 });
    let id = |i: usize| format!("{prefix}{i:06}");
    let body = |i: usize| format!(r#"{{"id":"{}","title":"Task {i}"}}"#, id(i));
    let start = Instant::now();
    if jetstream {
        let js = async_nats::jetstream::new(client.clone());
        let acks = futures::stream::iter(0..count)
            .map(|i| {
                let js = js.clone();
                let s = subject.clone();
                let b = body(i);
                async move {
                    match js.publish(s, b.into()).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .buffered(in_flight)
            .collect::<Vec<bool>>()
            .await;
        let bad = acks.iter().filter(|ok| !**ok).count();
        if bad > 0 {
            bail!("{bad} of {count} publishes were not acknowledged by the stream");
        }
    } else if request {
        let acks = futures::stream::iter(0..count)
            .map(|i| {
                let c = client.clone();
                let s = subject.clone();
                let b = body(i);
                async move {
                    let r =
                        tokio::time::timeout(Duration::from_secs(10), c.request(s, b.into())).await;
                    matches!(r, Ok(Ok(m)) if &m.payload[..] == br#"{"ok":true}"#)
                }
            })
            .buffered(in_flight)
            .collect::<Vec<bool>>()
            .await;
        let bad = acks.iter().filter(|ok| !**ok).count();
        if let Some(file) = acked_file {
            let ids: Vec<String> = (0..count).filter(|&i| acks[i]).map(id).collect();
            std::fs::write(&file, ids.join("\n") + "\n")
                .with_context(|| format!("writing {file}"))?;
            println!("{} of {count} acknowledged (ids in {file})", ids.len());
        } else if bad > 0 {
            bail!("{bad} of {count} requests were not acknowledged with {{\"ok\":true}}");
        }
    } else {
        for i in 0..count {
            client.publish(subject.clone(), body(i).into()).await?;
        }
        client.flush().await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {count} events in {secs:.3} s ({:.0}/s)",
        count as f64 / secs
    );
    Ok(())
}

/// The status code of `GET path` on `addr` (HTTP/1.1, one connection per call).
fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let line = String::from_utf8_lossy(&head);
    line.get(9..12)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")
}

async fn latency(client: &async_nats::Client, rest: &[String]) -> anyhow::Result<()> {
    let mut addr = String::new();
    let mut count = 200usize;
    let mut prefix = "lat-".to_owned();
    let mut jetstream = None;
    let mut it = rest.iter();
    while let Some(o) = it.next() {
        match o.as_str() {
            "--http" => addr = it.next().context("--http needs HOST:PORT")?.clone(),
            "--count" => count = it.next().context("--count needs N")?.parse()?,
            "--prefix" => prefix = it.next().context("--prefix needs P")?.clone(),
            "--jetstream" => jetstream = Some(async_nats::jetstream::new(client.clone())),
            other => bail!("unknown option {other:?}"),
        }
    }
    if count == 0 {
        bail!("--count must be at least 1");
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("{prefix}{i:06}");
        let start = Instant::now();
        let body = format!(r#"{{"id":"{id}","title":"Latency {i}"}}"#);
        if let Some(js) = &jetstream {
            js.publish("tasks.created", body.into()).await?.await?;
        } else {
            client.publish("tasks.created", body.into()).await?;
            client.flush().await?;
        }
        let path = format!("/api/tasks/{id}");
        while http_status(&addr, &path)? != 200 {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{id} not visible after 10 s");
            }
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "publish→visible over {count} events: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
