//! Files for the tests: a loopback HTTP server, gzip, and CIFAR-10 batches in the official format.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

use crate::cifar::CIFAR10_CLASSES;
use crate::cifar::{CIFAR10_FOLDER, META, RECORD, TEST_BATCH, TRAIN_BATCHES};

/// Serves `body` once per connection on 127.0.0.1 for `connections` connections.
pub(crate) fn serve(body: Vec<u8>, connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&body).unwrap();
        }
    });
    format!("http://{address}/file.gz")
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A batch of `count` records with labels `i % 10` and pixels `(i + j) % 251`.
pub(crate) fn batch(count: usize, first_label: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| {
            std::iter::once(((first_label + i) % 10) as u8)
                .chain((0..RECORD - 1).map(move |j| ((i + j) % 251) as u8))
        })
        .collect()
}

pub(crate) fn write_dir(dir: &Path, per_batch: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (b, name) in TRAIN_BATCHES.iter().enumerate() {
        std::fs::write(dir.join(name), batch(per_batch, b)).unwrap();
    }
    std::fs::write(dir.join(TEST_BATCH), batch(per_batch, 7)).unwrap();
    let names = CIFAR10_CLASSES.join("\n");
    std::fs::write(dir.join(META), names + "\n\n").unwrap();
}

pub(crate) fn tarball(dir: &Path) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    builder.append_dir_all(CIFAR10_FOLDER, dir).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}
