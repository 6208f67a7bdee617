//! A buffer each thread keeps for text it writes and then copies out or
//! hashes: not allocated, zeroed or freed for every object. One grown past
//! [`KEPT_BYTES`] by a large value (a runtime shard's 768 KiB, say) is let
//! go, for a daemon's threads live on; a use nested in another on the same
//! thread gets a buffer of its own.

use std::cell::RefCell;
use std::thread::LocalKey;

/// The largest buffer a thread keeps between uses: most objects take one
/// to four KiB.
pub(crate) const KEPT_BYTES: usize = 64 * 1024;

/// A buffer [`with_kept`] can keep: text or bytes.
pub(crate) trait Buffer: Default {
    /// Empties it, keeping its capacity.
    fn clear(&mut self);
    /// What it holds room for.
    fn capacity(&self) -> usize;
}

impl Buffer for String {
    fn clear(&mut self) {
        String::clear(self);
    }
    fn capacity(&self) -> usize {
        String::capacity(self)
    }
}

impl Buffer for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
}

/// Runs `use_it` on the thread's buffer in `kept`, emptied; the buffer is
/// let go afterwards when it grew past [`KEPT_BYTES`].
pub(crate) fn with_kept<B: Buffer + 'static, R>(
    kept: &'static LocalKey<RefCell<B>>,
    use_it: impl FnOnce(&mut B) -> R,
) -> R {
    kept.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            let result = use_it(&mut buffer);
            if buffer.capacity() > KEPT_BYTES {
                *buffer = B::default();
            }
            result
        }
        Err(_) => use_it(&mut B::default()),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::{KEPT_BYTES, with_kept};

    thread_local! {
        static KEPT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn the_buffer_is_emptied_kept_let_go_past_its_bound_and_never_shared() {
        with_kept(&KEPT, |b| b.extend_from_slice(b"first"));
        let kept = with_kept(&KEPT, |b| (b.len(), b.capacity()));
        assert_eq!(kept.0, 0, "emptied before each use");
        assert!(kept.1 >= 5, "kept between uses");
        with_kept(&KEPT, |b| b.resize(KEPT_BYTES + 1, b'x'));
        assert_eq!(KEPT.with_borrow(|b| b.capacity()), 0, "let go");
        let nested = with_kept(&KEPT, |outer| {
            outer.extend_from_slice(b"outer");
            let inner = with_kept(&KEPT, |inner| {
                inner.extend_from_slice(b"inner");
                inner.clone()
            });
            (outer.clone(), inner)
        });
        assert_eq!(nested, (b"outer".to_vec(), b"inner".to_vec()));
    }
}
