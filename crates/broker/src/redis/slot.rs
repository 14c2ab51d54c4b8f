//! Redis Cluster hash slots: which of the 16384 slots a key belongs to.
//!
//! Only the part of a key between the first `{` and the next `}` is hashed
//! when that part is not empty (a "hash tag"). Every key and channel of a
//! topic carries the topic as its tag, so they share one slot and one
//! script can touch them all.

/// Number of hash slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// The hash slot of `key`.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis uses.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &byte| {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_reference_values() {
        // The check value of CRC-16/XMODEM, and CLUSTER KEYSLOT answers.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"user1000"), 3443);
    }

    #[test]
    fn hash_tags_pick_the_hashed_part() {
        assert_eq!(key_slot(b"herald:{orders}:events"), key_slot(b"orders"));
        assert_eq!(key_slot(b"herald:{orders}:live"), key_slot(b"orders"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"a{}b"), crc16(b"a{}b") % 16384);
        assert_eq!(key_slot(b"{a}{b}"), key_slot(b"a"));
        assert_eq!(key_slot(b"{a"), crc16(b"{a") % 16384);
    }
}
