//! Hex for keys and hashes: lowercase out, either case in, with errors that
//! say where the text went wrong.

use crate::key::KeyError;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes exactly 64 hex digits (either case) into 32 bytes.
///
/// Positions in errors count characters from 1, as a person reads them.
pub(crate) fn decode_32(text: &str) -> Result<[u8; 32], KeyError> {
    let chars = text.chars().count();
    if chars != 64 {
        return Err(KeyError::HexLength { found: chars });
    }
    let mut out = [0u8; 32];
    let mut high = 0u8;
    for (position, c) in text.chars().enumerate() {
        let nibble = c.to_digit(16).ok_or(KeyError::NotHex {
            position: position + 1,
            found: c,
        })?;
        // A hex digit is below 16, so it fits a byte.
        let nibble = nibble as u8;
        if position % 2 == 0 {
            high = nibble << 4;
        } else {
            out[position / 2] = high | nibble;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        let bytes: [u8; 32] = core::array::from_fn(|i| (i * 37) as u8);
        let text = encode(&bytes);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(decode_32(&text).unwrap(), bytes);
        assert_eq!(decode_32(&text.to_uppercase()).unwrap(), bytes);
    }

    #[test]
    fn counts_characters_not_bytes() {
        let text = format!("{}é", "a".repeat(63));
        assert_eq!(
            decode_32(&text),
            Err(KeyError::NotHex {
                position: 64,
                found: 'é'
            })
        );
    }
}
