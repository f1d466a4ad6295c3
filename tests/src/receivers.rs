//! Receivers for the controller's notifications: a real SMTP server (Python's aiosmtpd from Debian, delivering into a maildir, optionally with STARTTLS) and a small HTTP server that records webhook requests and can refuse the first ones.

use crate::process::{ChildGuard, wait_for_greeting};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Debian's interpreter: `python3-aiosmtpd` installs for it, not for
/// another python3 that may come first on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// A running aiosmtpd on loopback that stores every mail in a maildir.
pub struct TestSmtpd {
    _child: ChildGuard,
    port: u16,
    maildir: PathBuf,
}

/// One received mail: its headers and body as text.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub subject: String,
    pub to: String,
    pub text: String,
}

impl TestSmtpd {
    /// Starts aiosmtpd on 127.0.0.1 and a free port, delivering into
    /// `dir/NAME-maildir`. With `tls` (certificate and key files), it
    /// offers STARTTLS and refuses mail without it.
    pub fn start(dir: &Path, name: &str, tls: Option<(&Path, &Path)>) -> Result<TestSmtpd> {
        let probe = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output()
            .with_context(|| format!("running {PYTHON}"))?;
        if !probe.status.success() {
            bail!(
                "the SMTP test server needs Debian's python3-aiosmtpd (apt-get install -y python3-aiosmtpd): {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
        }
        let ip = Ipv4Addr::LOCALHOST;
        let port = crate::free_port(IpAddr::V4(ip))?;
        let maildir = dir.join(format!("{name}-maildir"));
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("{ip}:{port}"));
        if let Some((cert, key)) = tls {
            cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
        }
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&maildir);
        let mut child = ChildGuard::spawn(name, &mut cmd, &crate::log_path(dir, name))?;
        wait_for_greeting(
            &mut child,
            SocketAddr::new(IpAddr::V4(ip), port),
            "SMTP server",
            "220",
            Duration::from_secs(15),
        )?;
        Ok(TestSmtpd {
            _child: child,
            port,
            maildir,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Result<Vec<ReceivedMail>> {
        let new = self.maildir.join("new");
        if !new.exists() {
            return Ok(Vec::new());
        }
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for entry in
            std::fs::read_dir(&new).with_context(|| format!("reading {}", new.display()))?
        {
            let entry = entry?;
            files.push((entry.metadata()?.modified()?, entry.path()));
        }
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let header = |name: &str| {
                    text.lines()
                        .take_while(|l| !l.is_empty())
                        .find_map(|l| l.strip_prefix(name))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                };
                Ok(ReceivedMail {
                    subject: header("Subject:"),
                    to: header("To:"),
                    text: text.clone(),
                })
            })
            .collect()
    }
}

/// One webhook request as received.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// Whether the receiver answered 200 (the others got a 500).
    pub accepted: bool,
}

/// A plain HTTP server on loopback that records every POST; the first
/// `refuse_first` requests are answered 500, the rest 200.
pub struct TestWebhook {
    port: u16,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
    stop: Arc<AtomicBool>,
}

impl TestWebhook {
    pub fn start(refuse_first: usize) -> Result<TestWebhook> {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the webhook receiver")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopping) = (received.clone(), stop.clone());
        let seen = AtomicUsize::new(0);
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let accepted = seen.fetch_add(1, Ordering::Relaxed) >= refuse_first;
                        if let (Ok(request), Ok(mut log)) = (serve(stream, accepted), log.lock()) {
                            log.push(request);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(TestWebhook {
            port,
            received,
            stop,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for TestWebhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one HTTP/1.1 request and answers it.
fn serve(stream: TcpStream, accepted: bool) -> Result<ReceivedRequest> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let answer = if accepted {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    } else {
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 12\r\nConnection: close\r\n\r\nnot just now"
    };
    let mut stream = stream;
    stream.write_all(answer.as_bytes())?;
    Ok(ReceivedRequest {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        accepted,
    })
}
