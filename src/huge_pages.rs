//! Transparent huge pages for the large tensors that a step reads and writes at scattered rows:
//! the embedding tables and their optimizer state. A batch touches a few thousand rows spread
//! over tens or hundreds of MB; with 4 KiB pages almost every row also misses the TLB (which
//! covers a few MB of them), with 2 MiB pages almost none does. Linux backs memory with huge pages
//! where the program asks for them (`madvise(MADV_HUGEPAGE)`) when transparent huge pages are in
//! `madvise` mode, the default of most distributions; in `always` mode it needs no asking, and in
//! `never` mode the advice is ignored. Either way the tensors and their values are the same.
use tch::{Device, Kind, Tensor};

/// The huge page size on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// An uninitialised tensor of `shape`, whose memory asks for huge pages (on the CPU) before
/// anything is written to it.
pub fn empty(shape: &[i64], (kind, device): (Kind, Device)) -> Tensor {
    let t = Tensor::empty(shape, (kind, device));
    advise(&t);
    t
}

/// As `empty`, every value set to `value`.
pub fn filled(shape: &[i64], value: f64, options: (Kind, Device)) -> Tensor {
    let mut t = empty(shape, options);
    let _ = t.fill_(value);
    t
}

/// Asks for huge pages for the 2 MiB-aligned pages inside `t`'s memory. Pages already touched
/// stay as they are until the kernel's background scan merges them.
fn advise(t: &Tensor) {
    let bytes = t.numel() * t.kind().elt_size_in_bytes();
    if t.device() != Device::Cpu || bytes < HUGE_PAGE {
        return;
    }
    let start = t.data_ptr() as usize;
    let (first, end) = (start.next_multiple_of(HUGE_PAGE), start + bytes);
    let last = end - end % HUGE_PAGE;
    #[cfg(target_os = "linux")]
    if last > first {
        // SAFETY: the range lies inside the tensor's allocation, and MADV_HUGEPAGE is advice
        // that changes neither the memory's contents nor its mapping; a kernel without
        // transparent huge pages answers EINVAL, which changes nothing either
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kilobytes of anonymous huge pages in the mapping that holds `address` (/proc/self/smaps).
    fn huge_kib_at(address: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(kib) = line.strip_prefix("AnonHugePages:") {
                    return kib.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn filled_tensors_hold_their_values_and_ask_for_huge_pages() {
        let small = filled(&[3, 4], 0.1, (Kind::Float, Device::Cpu));
        assert!(small.equal(&Tensor::full([3, 4], 0.1, (Kind::Float, Device::Cpu))));
        // 16 MiB: at least seven whole huge pages lie inside it
        let big = filled(&[1 << 18, 16], 0.5, (Kind::Float, Device::Cpu));
        assert_eq!(big.size(), [1 << 18, 16]);
        assert_eq!(
            big.sum(Kind::Double).double_value(&[]),
            0.5 * (1 << 22) as f64
        );
        // where the kernel grants huge pages on request (and says so in smaps; a sandboxed
        // kernel may not), the filled pages are huge ones
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        if mode.is_ok_and(|m| m.contains("[madvise]") || m.contains("[always]")) {
            // (the advice splits the mapping: the part from the first whole huge page on)
            match huge_kib_at((big.data_ptr() as usize).next_multiple_of(HUGE_PAGE)) {
                Some(kib) => assert!(kib >= 2048, "{kib} KiB of huge pages"),
                None => eprintln!("no AnonHugePages in /proc/self/smaps: values checked only"),
            }
        }
    }
}
