//! Kubernetes resource quantities (`500m`, `0.5`, `1Gi`, `1536Mi`, `1e3`)
//! compared by value: the API server stores them in canonical form, so
//! `cpu: 0.5` comes back as `500m` and must not count as drift.

/// The value of a quantity, or `None` when `text` is not one.
pub fn value(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '+' || *c == '-') && *i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number == "+" || number == "-" {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => 10f64.powi(exponent[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * scale)
}

/// Whether two quantities have the same value.
pub fn same(a: &str, b: &str) -> bool {
    match (value(a), value(b)) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_have_the_same_value() {
        assert!(same("0.5", "500m"));
        assert!(same("1000m", "1"));
        assert!(same("1.5Gi", "1536Mi"));
        assert!(same("1e3", "1k"));
        assert!(same("2048Ki", "2Mi"));
        assert!(!same("500m", "0.6"));
        assert!(!same("1G", "1Gi"));
        assert_eq!(value("fast"), None);
        assert_eq!(value("1Qi"), None);
        assert_eq!(value(""), None);
    }
}
