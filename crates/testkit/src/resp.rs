//! Just enough of the Redis protocol (RESP2) to send a command and read its
//! reply over a plain TCP connection, so the kit needs no Redis client.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A Redis reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`.
    Simple(String),
    /// `-ERR …`.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$…`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*…`; `None` for the null array.
    Array(Option<Vec<Resp>>),
}

/// Sends one command to the Redis at `addr` and reads its reply, all within
/// `timeout`.
pub(crate) async fn command(
    addr: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> std::io::Result<Resp> {
    let mut replies = pipeline(addr, None, &[args], timeout).await?;
    Ok(replies.remove(0))
}

/// Sends `commands` on one connection, after `AUTH <password>` when a
/// password is given, and returns their replies in order, all within
/// `timeout`. Arguments are bytes, so keys read from Redis go back as they
/// came (`MIGRATE … KEYS`).
///
/// One connection for several commands keeps the kit's polling loops from
/// leaving thousands of sockets in `TIME_WAIT` while they wait for a
/// cluster to settle.
///
/// A refused `AUTH` is an error (`PermissionDenied`) rather than a reply,
/// since every reply after it would only say `NOAUTH`.
pub(crate) async fn pipeline<A: AsRef<[u8]>>(
    addr: SocketAddr,
    password: Option<&str>,
    commands: &[&[A]],
    timeout: Duration,
) -> std::io::Result<Vec<Resp>> {
    let mut request = Vec::new();
    if let Some(password) = password {
        request.extend(encode_command(&["AUTH", password]));
    }
    for args in commands {
        request.extend(encode_command(args));
    }
    let expected = commands.len() + usize::from(password.is_some());
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(&request).await?;
        let mut buffer = Vec::new();
        let mut used = 0;
        let mut replies = Vec::with_capacity(expected);
        while replies.len() < expected {
            match parse(&buffer[used..]) {
                Ok(Some((reply, n))) => {
                    replies.push(reply);
                    used += n;
                    continue;
                }
                Ok(None) => {}
                Err(message) => return Err(std::io::Error::other(message)),
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(replies)
    };
    let mut replies = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    if password.is_some() {
        if let Resp::Error(message) = replies.remove(0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("AUTH refused: {message}"),
            ));
        }
    }
    Ok(replies)
}

/// A command as an array of bulk strings.
fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buffer`: `Ok(None)` when it is not
/// complete yet, else the reply and the bytes it took.
fn parse(buffer: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buffer[1..line_end]).map_err(|e| e.to_string())?;
    let after = line_end + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| format!("bad length {line:?}"))
    };
    match buffer.first() {
        Some(b'+') => Ok(Some((Resp::Simple(line.to_owned()), after))),
        Some(b'-') => Ok(Some((Resp::Error(line.to_owned()), after))),
        Some(b':') => Ok(Some((Resp::Integer(number()?), after))),
        Some(b'$') => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Resp::Bulk(None), after)));
            };
            if buffer.len() < after + len + 2 {
                return Ok(None);
            }
            let bytes = buffer[after..after + len].to_vec();
            Ok(Some((Resp::Bulk(Some(bytes)), after + len + 2)))
        }
        Some(b'*') => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Some((Resp::Array(None), after)));
            };
            let mut items = Vec::with_capacity(len);
            let mut used = after;
            for _ in 0..len {
                match parse(&buffer[used..])? {
                    Some((item, n)) => {
                        items.push(item);
                        used += n;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), used)))
        }
        other => Err(format!("unexpected reply type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode_command(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }

    #[test]
    fn parses_every_reply_type_and_waits_for_more() {
        assert_eq!(
            parse(b"+PONG\r\n"),
            Ok(Some((Resp::Simple("PONG".into()), 7)))
        );
        assert_eq!(
            parse(b"-ERR x\r\n"),
            Ok(Some((Resp::Error("ERR x".into()), 8)))
        );
        assert_eq!(parse(b":-3\r\n"), Ok(Some((Resp::Integer(-3), 5))));
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Resp::Bulk(None), 5))));
        assert_eq!(parse(b"$3\r\na\r\n"), Ok(None));
        assert_eq!(
            parse(b"*2\r\n$1\r\nx\r\n:1\r\n"),
            Ok(Some((
                Resp::Array(Some(vec![
                    Resp::Bulk(Some(b"x".to_vec())),
                    Resp::Integer(1)
                ])),
                15
            )))
        );
        assert_eq!(parse(b"*2\r\n$1\r\nx\r\n"), Ok(None));
        assert_eq!(parse(b"+PO"), Ok(None));
    }
}
