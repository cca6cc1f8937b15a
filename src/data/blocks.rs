//! A file read as blocks of whole lines, parsed on worker threads and handed back in file order:
//! the text is parsed on every core while all that depends on order (line numbers, splits,
//! first-seen ids, the output) stays on the calling thread. Memory is a few blocks per worker,
//! whatever the file's size.
use std::io::{self, Read};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread;

/// Bytes of text per block (a block grows past it only to finish a longer line).
pub(crate) const BLOCK_BYTES: usize = 1 << 20;

/// How the text is cut and parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockPlan {
    pub block_bytes: usize,
    pub workers: usize,
}

impl Default for BlockPlan {
    /// 1 MiB blocks; a worker per core, up to 4 (one thread consumes what they parse, and more
    /// would only wait for it).
    fn default() -> Self {
        BlockPlan {
            block_bytes: BLOCK_BYTES,
            workers: thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

/// Reads `reader` to its end in blocks of whole lines (each ends with `\n` but the last, when
/// the text does not), has `parse(state, block, out)` fill `out` on `plan.workers` threads (each
/// with a `state` of `new_state`), and calls `consume(block, out)` on the calling thread for
/// every block in order. Stops at the first error of `consume`, or of reading (`read_error`
/// says what it means).
pub(crate) fn parse_blocks<S, P, E>(
    reader: impl Read + Send,
    plan: BlockPlan,
    new_state: impl Fn() -> S + Sync,
    parse: impl Fn(&mut S, &[u8], &mut P) + Sync,
    mut consume: impl FnMut(&[u8], &P) -> Result<(), E>,
    read_error: impl FnOnce(io::Error) -> E,
) -> Result<(), E>
where
    P: Default + Send,
{
    let workers = plan.workers.max(1);
    let block_bytes = plan.block_bytes.max(1);
    thread::scope(|scope| {
        let (spent_tx, spent_rx) = channel::<Vec<u8>>();
        let mut to_workers = Vec::with_capacity(workers);
        let mut from_workers = Vec::with_capacity(workers);
        let mut outs_back = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (text_tx, text_rx) = sync_channel::<Vec<u8>>(1);
            let (done_tx, done_rx) = sync_channel::<(Vec<u8>, P)>(1);
            let (back_tx, back_rx) = channel::<P>();
            let (new_state, parse) = (&new_state, &parse);
            scope.spawn(move || {
                let mut state = new_state();
                for text in text_rx {
                    let mut out = back_rx.try_recv().unwrap_or_default();
                    parse(&mut state, &text, &mut out);
                    if done_tx.send((text, out)).is_err() {
                        break;
                    }
                }
            });
            to_workers.push(text_tx);
            from_workers.push(done_rx);
            outs_back.push(back_tx);
        }
        let reading = scope.spawn(move || read_blocks(reader, block_bytes, &to_workers, &spent_rx));
        // In order: block k was sent to worker k % workers, which answers in the order received.
        // The loop ends when the next worker has stopped: the text is all read (or reading
        // failed, which `reading` reports).
        let mut k = 0;
        while let Ok((text, out)) = from_workers[k % workers].recv() {
            consume(&text, &out)?;
            let _ = spent_tx.send(text);
            let _ = outs_back[k % workers].send(out);
            k += 1;
        }
        match reading.join() {
            Ok(result) => result.map_err(read_error),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The reading thread: cuts the text after the last newline of each block, carrying the partial
/// line over, and deals the blocks out in turn. Returns early, without error, when the workers
/// are gone (the consumer stopped).
fn read_blocks(
    mut reader: impl Read,
    block_bytes: usize,
    to_workers: &[SyncSender<Vec<u8>>],
    spent: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    for k in 0.. {
        let mut text = spent.try_recv().unwrap_or_default();
        text.clear();
        text.append(&mut carry);
        let mut eof = fill(&mut reader, &mut text, block_bytes)?;
        let mut cut = memchr::memrchr(b'\n', &text).map(|i| i + 1);
        // a line longer than a block: read on until it ends
        while cut.is_none() && !eof {
            let from = text.len();
            eof = fill(&mut reader, &mut text, from + block_bytes)?;
            cut = memchr::memrchr(b'\n', &text[from..]).map(|i| from + i + 1);
        }
        if eof {
            cut = Some(text.len());
        }
        if text.is_empty() {
            return Ok(());
        }
        carry.extend_from_slice(&text[cut.unwrap_or(text.len())..]);
        text.truncate(cut.unwrap_or(text.len()));
        if to_workers[k % to_workers.len()].send(text).is_err() || eof {
            return Ok(());
        }
    }
    Ok(())
}

/// Reads into `text` until it holds `upto` bytes; true at the end of the input.
fn fill(reader: &mut impl Read, text: &mut Vec<u8>, upto: usize) -> io::Result<bool> {
    let want = upto.saturating_sub(text.len());
    let got = reader.by_ref().take(want as u64).read_to_end(text)?;
    Ok(got < want)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines handed back in order, for any block size and number of workers, with a partial
    /// last line, lines longer than a block and empty lines.
    #[test]
    fn blocks_are_whole_lines_in_order() {
        let mut text = Vec::new();
        for i in 0..500 {
            let len = (i * 37) % 90;
            text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
            text.push(b'\n');
        }
        text.extend_from_slice(b"last line without a newline");
        for (block_bytes, workers) in [(1, 1), (7, 2), (64, 3), (1000, 2), (1 << 20, 4)] {
            let plan = BlockPlan {
                block_bytes,
                workers,
            };
            let mut got = Vec::new();
            let mut blocks = 0;
            parse_blocks(
                &text[..],
                plan,
                || (),
                |_, block: &[u8], out: &mut Vec<u8>| {
                    out.clear();
                    out.extend_from_slice(block);
                },
                |block, out: &Vec<u8>| -> io::Result<()> {
                    assert_eq!(block, &out[..]);
                    let whole_lines = block.last() == Some(&b'\n');
                    assert!(whole_lines || got.len() + block.len() == text.len());
                    got.extend_from_slice(block);
                    blocks += 1;
                    Ok(())
                },
                |e| e,
            )
            .unwrap();
            assert_eq!(got, text, "block_bytes {block_bytes}, workers {workers}");
            assert!(blocks >= 1);
        }
    }

    /// An error of the consumer stops everything and is returned; so is a read error.
    #[test]
    fn errors_stop_the_pipeline() {
        let text = b"a\n".repeat(10_000);
        let plan = BlockPlan {
            block_bytes: 16,
            workers: 2,
        };
        let mut seen = 0;
        let r = parse_blocks(
            &text[..],
            plan,
            || (),
            |_, _: &[u8], _: &mut ()| {},
            |_, _| {
                seen += 1;
                if seen == 3 {
                    Err(io::Error::other("stop"))
                } else {
                    Ok(())
                }
            },
            |e| e,
        );
        assert_eq!(r.unwrap_err().to_string(), "stop");
        assert_eq!(seen, 3);

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                self.0 -= 1;
                buf[0] = b'\n';
                Ok(1)
            }
        }
        let r = parse_blocks(
            Failing(100),
            plan,
            || (),
            |_, _: &[u8], _: &mut ()| {},
            |_, _| -> io::Result<()> { Ok(()) },
            |e| io::Error::other(format!("reading: {e}")),
        );
        assert_eq!(r.unwrap_err().to_string(), "reading: disk on fire");
    }
}
