//! Unpadded base64, as Matrix writes keys, signatures, hashes and event IDs.
//!
//! We always emit unpadded output. We decode leniently (padding optional, non-zero trailing
//! bits allowed) because the spec's own test seed has non-zero trailing bits and the spec says
//! decoders should accept padded input.

use ::base64::Engine;
use ::base64::alphabet;
use ::base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const ENCODE_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new().with_encode_padding(false);
const DECODE_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);

const STANDARD_ENCODE: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ENCODE_CONFIG);
const STANDARD_DECODE: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, DECODE_CONFIG);
const URL_SAFE_ENCODE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ENCODE_CONFIG);
const URL_SAFE_DECODE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, DECODE_CONFIG);

/// Standard alphabet, no padding.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD_ENCODE.encode(bytes)
}

/// URL-safe alphabet (`-`, `_`), no padding: event IDs in room versions 4+, v12 room IDs.
pub fn encode_url_safe(bytes: &[u8]) -> String {
    URL_SAFE_ENCODE.encode(bytes)
}

/// Decodes standard base64, with or without padding, allowing non-zero trailing bits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD_DECODE.decode(text).ok()
}

/// Decodes URL-safe base64, with or without padding, allowing non-zero trailing bits.
pub fn decode_url_safe(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_DECODE.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's examples (appendices, "Unpadded Base64").
    #[test]
    fn spec_examples() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(decode("Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(decode("Zm8=").as_deref(), Some(&b"fo"[..]));
        // Non-zero trailing bits (the spec's test seed ends like this).
        let a = decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        let b = decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert!(decode("Z").is_none());
        assert!(decode("a-b_").is_none());
        assert_eq!(decode_url_safe("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(encode_url_safe(&[0xfb, 0xff]), "-_8");
        assert_eq!(encode(&[0xfb, 0xff]), "+/8");
    }
}
