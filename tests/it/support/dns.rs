//! A DNS server the test controls, for the callback policy's rebinding and pinning tests.
//!
//! It answers `A` queries for one name from a script (one answer list per query, the last
//! repeated), gives an empty answer for other types of that name and NXDOMAIN for anything
//! else. The daemon is pointed at it by [`resolv_wrapper`]: a private mount namespace where
//! `/etc/resolv.conf` names this server, so the daemon's own system resolver (glibc
//! `getaddrinfo`) asks it and nothing else changes on the machine. Needs root (port 53,
//! `unshare`, `mount`); [`DnsServer::start`] returns `None` where that is not possible.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Script {
    /// Answers for the next `A` queries; the last one repeats.
    answers: Vec<Vec<Ipv4Addr>>,
    /// Every `A` query for the name, with what it was told.
    log: Vec<Vec<Ipv4Addr>>,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    name: String,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `name` on port 53 of a loopback address of its own.
    pub fn start(name: &str) -> Option<DnsServer> {
        // 127.53.x.y: apart from the stubs on 127.0.0.x, and one per test process.
        let pid = std::process::id();
        let ip = Ipv4Addr::new(127, 53, (pid >> 8) as u8, (pid as u8).max(1));
        let socket = UdpSocket::bind((ip, 53)).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let script = Arc::new(Mutex::new(Script {
            answers: vec![Vec::new()],
            log: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (script, stop, name) = (script.clone(), stop.clone(), name.to_ascii_lowercase());
            std::thread::spawn(move || serve(socket, &name, &script, &stop))
        };
        Some(DnsServer {
            addr: SocketAddr::from((ip, 53)),
            name: name.to_string(),
            script,
            stop,
            thread: Some(thread),
        })
    }

    /// The answers for the next `A` queries, in order; the last one keeps being given.
    pub fn script(&self, answers: &[&[Ipv4Addr]]) {
        let mut script = self.script.lock().unwrap();
        script.answers = answers.iter().map(|a| a.to_vec()).collect();
    }

    /// What each `A` query so far was told.
    pub fn queries(&self) -> Vec<Vec<Ipv4Addr>> {
        self.script.lock().unwrap().log.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: UdpSocket, name: &str, script: &Mutex<Script>, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((len, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = answer(&buf[..len], name, script) {
            let _ = socket.send_to(&reply, peer);
        }
    }
}

/// Builds the response to one query (RFC 1035 §4.1), or `None` for garbage.
fn answer(query: &[u8], name: &str, script: &Mutex<Script>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root label, then QTYPE and QCLASS.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let question_end = pos + 4;
    query.get(..question_end)?;
    let known = labels.join(".") == name;

    let addrs = if known && qtype == 1 {
        let mut script = script.lock().unwrap();
        let addrs = if script.answers.len() > 1 {
            script.answers.remove(0)
        } else {
            script.answers[0].clone()
        };
        script.log.push(addrs.clone());
        addrs
    } else {
        Vec::new()
    };

    let mut reply = Vec::with_capacity(question_end + 16 * addrs.len());
    reply.extend_from_slice(&query[0..2]); // id
    let recursion_desired = query[2] & 0x01;
    reply.push(0x80 | recursion_desired); // QR, opcode 0
    reply.push(if known { 0x80 } else { 0x83 }); // RA; NOERROR or NXDOMAIN
    reply.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    reply.extend_from_slice(&(addrs.len() as u16).to_be_bytes()); // ANCOUNT
    reply.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    reply.extend_from_slice(&query[12..question_end]);
    for ip in addrs {
        reply.extend_from_slice(&[0xc0, 0x0c]); // the name in the question
        reply.extend_from_slice(&[0, 1, 0, 1]); // A, IN
        reply.extend_from_slice(&0u32.to_be_bytes()); // TTL 0: nobody may cache it
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// A `resolv.conf` naming `dns`, written into `dir`, and the wrapper command that runs the
/// daemon in a private mount namespace with that file over `/etc/resolv.conf`.
pub fn resolv_wrapper(dns: &DnsServer, dir: &Path) -> Vec<String> {
    let path: PathBuf = dir.join("resolv.conf");
    std::fs::write(
        &path,
        format!(
            "nameserver {}\noptions attempts:2 timeout:1\n",
            dns.addr.ip()
        ),
    )
    .unwrap();
    vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#.into(),
        path.to_str().unwrap().into(),
    ]
}

/// Whether this machine lets the test make a mount namespace (root with `unshare`).
pub fn can_unshare_mounts() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
