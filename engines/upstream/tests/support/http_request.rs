//! Reading one HTTP/1.1 request off a socket, for the test servers (`replay.rs`, and
//! `dynamo-trtllm`'s stand-in).

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The request line and the body of the next request, or `None` at the end of the connection.
pub(crate) async fn read_request(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let (head, body) = read_request_head(socket).await?;
    Some((head.lines().next().unwrap_or("").to_owned(), body))
}

/// The head (request line and headers) and the body of the next request, or `None` at the end
/// of the connection.
pub(crate) async fn read_request_head(socket: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = socket.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = socket.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buffer[..n]);
    }
    Some((head, data[head_end..head_end + length].to_vec()))
}
