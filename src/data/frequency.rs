//! How frequent a sample's categories were in training (paper 001, Table 4).
//!
//! A sample's frequency is the product over fields of the training count of its category,
//! computed as a sum of natural logarithms so that 26 counts of up to millions do not overflow.
//! An out-of-vocabulary category (index 0: unseen in training, or rarer than `min_count`)
//! counts as seen once and contributes `ln 1 = 0`: the OOV row's own count pools every rare
//! value together and would make the rarest samples look frequent.
use super::{Dataset, Split};

/// `ln(count)` of one category's training count, with OOV (index 0) counted as 1.
pub fn log_count(index: u32, counts: &[u32]) -> f64 {
    if index == 0 {
        return 0.0;
    }
    // a count of 0 cannot occur for an in-vocabulary index; treat it like OOV all the same
    f64::from(counts.get(index as usize).copied().unwrap_or(1).max(1)).ln()
}

/// Per row of `split`: Σ over fields of `ln(training count of its category)`.
pub fn sample_log_frequencies(dataset: &Dataset, split: Split) -> Vec<f64> {
    let data = dataset.split(split);
    let fields: Vec<&[u32]> = (0..dataset.num_fields())
        .map(|f| dataset.field_frequencies(f))
        .collect();
    (0..data.len)
        .map(|row| {
            data.row_cat(row)
                .iter()
                .zip(&fields)
                .map(|(&index, counts)| log_count(index, counts))
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oov_counts_as_once_and_counts_are_logged() {
        let counts = [500, 3, 7];
        assert_eq!(log_count(0, &counts), 0.0);
        assert_eq!(log_count(1, &counts), 3f64.ln());
        assert_eq!(log_count(2, &counts), 7f64.ln());
    }
}
