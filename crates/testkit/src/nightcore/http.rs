//! A client of nightcore's gateway: `POST /function/NAME` with the input as
//! the body, over one kept-alive HTTP/1.1 connection, with a deadline per
//! request so that a call the platform never answers is seen as such
//! instead of hanging the caller. Written here rather than taken from an
//! HTTP crate because the load generator needs exactly this: one
//! connection per closed-loop client, no retries (a retried request would
//! hide a lost answer), and "no answer" as an outcome.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// What the client saw for one request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    /// HTTP 200: the function's output.
    Ok(Vec<u8>),
    /// Another status (nightcore answers 500 when the function returned
    /// non-zero), with its body.
    Status(u16, Vec<u8>),
    /// Nothing within the deadline, or the connection closed first.
    NoAnswer,
}

impl Answer {
    /// A short printable form for assertion messages.
    pub fn show(&self) -> String {
        match self {
            Answer::Ok(b) => format!("200 {:?}", String::from_utf8_lossy(b)),
            Answer::Status(s, b) => format!("{s} {:?}", String::from_utf8_lossy(b)),
            Answer::NoAnswer => "no answer".to_string(),
        }
    }
}

/// One closed-loop client: one request at a time on one connection.
pub struct Client {
    addr: SocketAddr,
    deadline: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr, deadline: Duration) -> Client {
        Client {
            addr,
            deadline,
            conn: None,
        }
    }

    /// Invoke function `name` with `input`; the connection is kept for the
    /// next call unless the answer was missing or the server closes it.
    pub fn call(&mut self, name: &str, input: &[u8]) -> std::io::Result<Answer> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.deadline)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.deadline))?;
            s.set_write_timeout(Some(self.deadline))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut req = format!(
            "POST /function/{name} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            input.len()
        )
        .into_bytes();
        req.extend_from_slice(input);
        if conn.get_mut().write_all(&req).is_err() {
            self.conn = None;
            return Ok(Answer::NoAnswer);
        }
        match read_response(conn) {
            Ok(Some((status, body, keep))) => {
                if !keep {
                    self.conn = None;
                }
                Ok(if status == 200 {
                    Answer::Ok(body)
                } else {
                    Answer::Status(status, body)
                })
            }
            Ok(None) => {
                self.conn = None;
                Ok(Answer::NoAnswer)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                self.conn = None;
                Ok(Answer::NoAnswer)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// One response: status, body, and whether the connection stays open.
/// `None` when the server closed the connection before a status line.
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<(u16, Vec<u8>, bool)>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    let mut keep = version == "HTTP/1.1";
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(bad(&format!("bad header {l:?}")));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse().map_err(|_| bad("bad Content-Length"))?);
        } else if k.eq_ignore_ascii_case("connection") {
            keep =
                v.eq_ignore_ascii_case("keep-alive") || (keep && !v.eq_ignore_ascii_case("close"));
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
            keep = false;
        }
    }
    Ok(Some((status, body, keep)))
}
