//! SHA-256 throughput of the sha2 crate (what Wharf hashes with) against
//! ring's (which rustls already brings in), and of the CRC32C the block
//! sums of stored copies use (what a checked read costs), in one run:
//! `cargo run --release -p wharf-oci --example hash_throughput [MIB] [ROUNDS]`.
//! The push path hashes every byte it stores, so this bounds how close a
//! push can come to the disk's speed. Prints one line per implementation
//! and round, then the medians.

use std::time::Instant;

use sha2::Digest as _;

const UPDATE_BYTES: usize = 256 << 10;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    // Incompressible bytes without a dependency: an xorshift stream.
    let mut data = vec![0u8; mib << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    println!("sha-ni: {}", sha_ni());
    let mut results: Vec<(&str, Vec<f64>)> =
        vec![("sha2", vec![]), ("ring", vec![]), ("crc32c", vec![])];
    let mut digests = Vec::new();
    for round in 0..rounds {
        for (name, times) in results.iter_mut() {
            let t = Instant::now();
            let hex = match *name {
                "crc32c" => {
                    let mut crc = 0u32;
                    for c in data.chunks(UPDATE_BYTES) {
                        crc = crc32c::crc32c_append(crc, c);
                    }
                    let s = t.elapsed().as_secs_f64();
                    println!("round {round} crc32c: {s:.3} s for {mib} MiB ({crc:08x})");
                    times.push(s);
                    continue;
                }
                "sha2" => {
                    let mut h = sha2::Sha256::new();
                    for c in data.chunks(UPDATE_BYTES) {
                        h.update(c);
                    }
                    hex::encode(h.finalize())
                }
                _ => {
                    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                    for c in data.chunks(UPDATE_BYTES) {
                        h.update(c);
                    }
                    hex::encode(h.finish())
                }
            };
            let s = t.elapsed().as_secs_f64();
            println!(
                "round {round} {name}: {:.3} s for {mib} MiB, {:.0} MiB/s",
                s,
                mib as f64 / s
            );
            times.push(s);
            digests.push(hex);
        }
    }
    digests.dedup();
    assert_eq!(digests.len(), 1, "the implementations disagree");
    for (name, mut times) in results {
        times.sort_by(|a, b| a.total_cmp(b));
        let median = times[times.len() / 2];
        println!(
            "median {name}: {:.3} s per GiB, {:.0} MiB/s",
            median * 1024.0 / mib as f64,
            mib as f64 / median
        );
    }
}

#[cfg(target_arch = "x86_64")]
fn sha_ni() -> bool {
    std::arch::is_x86_feature_detected!("sha")
}

#[cfg(not(target_arch = "x86_64"))]
fn sha_ni() -> bool {
    false
}
