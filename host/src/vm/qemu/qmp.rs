//! A minimal QMP client over a Unix socket: greeting, capability
//! negotiation, synchronous commands with ids, and the events that arrive
//! in between. Every reply is checked; a timeout or a malformed message
//! poisons the connection, because the stream may be out of step after it.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::vm::VmError;

/// An open, negotiated QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    timeout: Duration,
    /// Events received so far, oldest first.
    events: Vec<Value>,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

impl Qmp {
    /// Reads the greeting and negotiates capabilities; each read waits at
    /// most `timeout`.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, VmError> {
        let writer = stream.try_clone().map_err(|source| VmError::Io {
            what: "cloning the QMP socket".into(),
            source,
        })?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            timeout,
            events: Vec::new(),
            broken: None,
        };
        let greeting = qmp.read_message("the greeting")?;
        if greeting.get("QMP").is_none() {
            return Err(VmError::Qmp(format!(
                "expected a greeting with a \"QMP\" key, got {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Replaces how long each later read may wait.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `command` without arguments and returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<Value, VmError> {
        self.execute_with(command, None)
    }

    /// Runs `command` with `arguments` (a JSON object) when given.
    pub fn execute_with(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmError> {
        if let Some(why) = &self.broken {
            return Err(VmError::Qmp(format!(
                "{command}: connection unusable: {why}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        tracing::debug!(target: "ktstr::qmp", "-> {line}");
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()) {
            return Err(self.poison(format!("sending {command}: {e}")));
        }
        let what = format!("the reply to {command}");
        loop {
            let msg = self.read_message(&what)?;
            if msg.get("event").is_some() {
                self.events.push(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(self.poison(format!("{what}: unexpected message {msg}")));
            }
            if let Some(ret) = msg.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = msg.get("error") {
                let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("?");
                return Err(VmError::Qmp(format!(
                    "{command} failed: {}: {}",
                    field("class"),
                    field("desc")
                )));
            }
            return Err(self.poison(format!("{what}: neither return nor error in {msg}")));
        }
    }

    /// A human monitor command (`info registers -a`), its text output.
    pub fn human(&mut self, command_line: &str) -> Result<String, VmError> {
        let ret = self.execute_with(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        ret.as_str()
            .map(str::to_owned)
            .ok_or_else(|| VmError::Qmp(format!("{command_line}: the reply is not text: {ret}")))
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, ...).
    pub fn status(&mut self) -> Result<String, VmError> {
        let ret = self.execute("query-status")?;
        ret.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| VmError::Qmp(format!("query-status returned no status: {ret}")))
    }

    /// Reads what QEMU sent before closing the socket (waiting at most
    /// `timeout` per read) and keeps its events. Used after QEMU exited.
    pub fn drain(&mut self, timeout: Duration) {
        if self.broken.is_some()
            || self
                .reader
                .get_ref()
                .set_read_timeout(Some(timeout))
                .is_err()
        {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.get("event").is_some() => self.events.push(v),
                    Ok(_) => {}
                    Err(_) => break,
                },
            }
        }
        self.broken = Some("drained after QEMU exited".into());
    }

    /// The `reason` of the last `SHUTDOWN` event seen (`guest-shutdown`,
    /// `guest-reset`, `host-signal`, ...).
    pub fn shutdown_reason(&self) -> Option<&str> {
        self.events
            .iter()
            .rev()
            .find(|e| e.get("event").and_then(Value::as_str) == Some("SHUTDOWN"))
            .and_then(|e| e.pointer("/data/reason"))
            .and_then(Value::as_str)
    }

    fn poison(&mut self, why: String) -> VmError {
        self.broken = Some(why.clone());
        VmError::Qmp(why)
    }

    /// One JSON object from the stream.
    fn read_message(&mut self, what: &str) -> Result<Value, VmError> {
        if let Err(e) = self.reader.get_ref().set_read_timeout(Some(self.timeout)) {
            return Err(self.poison(format!("setting the read timeout: {e}")));
        }
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(self.poison(format!(
                "QEMU closed the connection while we waited for {what} (did it exit?)"
            ))),
            Ok(_) => {
                tracing::debug!(target: "ktstr::qmp", "<- {}", line.trim_end());
                serde_json::from_str(&line)
                    .map_err(|e| self.poison(format!("{what}: malformed JSON {line:?}: {e}")))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(self
                .poison(format!(
                    "timed out after {:?} waiting for {what}",
                    self.timeout
                ))),
            Err(e) => Err(self.poison(format!("reading {what}: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::thread;

    /// A scripted QMP server: for each client line, the reply lines to send.
    fn server(script: Vec<(&'static str, Vec<String>)>) -> (UnixStream, thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n")
                .unwrap();
            let mut r = BufReader::new(theirs);
            for (expect, replies) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], expect);
                for reply in replies {
                    let reply = reply.replace("ID", &v["id"].to_string());
                    w.write_all(reply.as_bytes()).unwrap();
                    w.write_all(b"\r\n").unwrap();
                }
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        (ours, h)
    }

    #[test]
    fn commands_events_and_errors() {
        let ret = |s: &str| format!("{{\"return\": {s}, \"id\": ID}}");
        let (sock, h) = server(vec![
            ("qmp_capabilities", vec![ret("{}")]),
            (
                "stop",
                vec![
                    r#"{"event": "STOP", "data": {}, "timestamp": {}}"#.into(),
                    ret("{}"),
                ],
            ),
            (
                "query-status",
                vec![ret(r#"{"status": "paused", "running": false}"#)],
            ),
            (
                "cont",
                vec![r#"{"error": {"class": "GenericError", "desc": "nope"}, "id": ID}"#.into()],
            ),
        ]);
        let mut q = Qmp::handshake(sock, Duration::from_secs(5)).unwrap();
        q.execute("stop").unwrap();
        assert_eq!(q.status().unwrap(), "paused");
        let e = q.execute("cont").unwrap_err().to_string();
        assert!(e.contains("cont failed: GenericError: nope"), "{e}");
        assert_eq!(q.events.len(), 1);
        drop(q);
        h.join().unwrap();
    }

    #[test]
    fn timeout_poisons_the_connection() {
        let (sock, _theirs) = UnixStream::pair().unwrap();
        let e = Qmp::handshake(sock, Duration::from_millis(50))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("waiting for the greeting"), "{e}");
    }

    #[test]
    fn drain_finds_the_shutdown_reason() {
        let (sock, h) = server(vec![(
            "qmp_capabilities",
            vec![
                "{\"return\": {}, \"id\": ID}".into(),
                r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#.into(),
            ],
        )]);
        let mut q = Qmp::handshake(sock, Duration::from_secs(5)).unwrap();
        // The server thread blocks reading; close our write half so it ends.
        q.writer.shutdown(std::net::Shutdown::Write).unwrap();
        h.join().unwrap();
        q.drain(Duration::from_secs(1));
        assert_eq!(q.shutdown_reason(), Some("guest-reset"));
        assert!(q.execute("cont").is_err());
    }
}
