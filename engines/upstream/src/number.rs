//! Sampling parameters sent as the client wrote them.

use serde_json::{Number, Value};

/// The JSON number for an `f32` sampling parameter: the shortest decimal that reads back as
/// `value`, so `0.7_f32` is sent as `0.7`.
///
/// The gateway parses a client's `"temperature": 0.7` into an `f32`. `serde_json` writes an
/// `f32` held in a [`Value`] as the `f64` nearest to it, `0.699999988079071`, and the engine,
/// which parses JSON numbers as doubles, would sample at a temperature the client did not send.
/// A value JSON cannot hold (NaN, infinite) is `null`, as `serde_json` writes it.
///
/// ```
/// use dynamo_upstream::json_float;
///
/// assert_eq!(json_float(0.7).to_string(), "0.7");
/// assert_eq!(serde_json::json!(0.7_f32).to_string(), "0.699999988079071");
/// assert_eq!(json_float(1.0).to_string(), "1.0");
/// assert!(json_float(f32::NAN).is_null());
/// ```
pub fn json_float(value: f32) -> Value {
    // Rust prints the shortest decimal that parses back to the same f32.
    let written = value.to_string().parse().unwrap_or(f64::from(value));
    Number::from_f64(written).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every decimal a client is likely to write for a sampling parameter, 0.000 to 2.000,
    /// parsed as the gateway parses it, goes out as written.
    #[test]
    fn a_clients_decimal_goes_out_as_written() {
        for thousandths in 0..=2000_u32 {
            let written = format!("{}.{:03}", thousandths / 1000, thousandths % 1000);
            let parsed: f32 = written.parse().unwrap();
            let sent = json_float(parsed);
            assert_eq!(sent.as_f64(), written.parse::<f64>().ok(), "{written}");
        }
    }

    /// Read back as an `f32`, what is sent is the same value, across the whole range.
    #[test]
    fn reads_back_as_the_same_f32() {
        for bits in (0..=u32::MAX).step_by(65_537) {
            let value = f32::from_bits(bits);
            let sent = json_float(value);
            if value.is_finite() {
                assert_eq!(sent.as_f64().map(|v| v as f32), Some(value), "{value:e}");
            } else {
                assert!(sent.is_null(), "{value}");
            }
        }
    }
}
