//! A storage backend that reads a file but keeps every write in memory.
//!
//! Used to check the root key before anything touches the file: redb may write while opening
//! (recovery flags, repair after a crash), so the first open goes through this overlay and a
//! wrong key leaves the file byte-for-byte unchanged.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Mutex;

use redb::StorageBackend;

type BackendIoError = std::io::Error;

const BLOCK: u64 = 4096;

#[derive(Debug)]
pub(crate) struct OverlayBackend {
    file: File,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    len: u64,
    file_len: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

impl OverlayBackend {
    pub(crate) fn new(file: File) -> std::io::Result<Self> {
        let file_len = file.metadata()?.len();
        Ok(OverlayBackend { file, state: Mutex::new(Overlay { len: file_len, file_len, blocks: HashMap::new() }) })
    }
}

fn poisoned() -> BackendIoError {
    std::io::Error::other("overlay lock poisoned")
}

/// Reads exactly `buf.len()` bytes at `offset` without a shared cursor (positional read).
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset` (`seek_read` may return fewer: loop).
#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Portable fallback: seek, then read. Safe because every caller holds the overlay's mutex, so no
/// other read moves the file's cursor in between.
#[cfg(not(any(unix, windows)))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

impl Overlay {
    fn read_block(&self, file: &File, index: u64) -> std::io::Result<Box<[u8]>> {
        if let Some(b) = self.blocks.get(&index) {
            return Ok(b.clone());
        }
        let mut buf = vec![0u8; BLOCK as usize].into_boxed_slice();
        let start = index * BLOCK;
        if start < self.file_len {
            let n = (self.file_len - start).min(BLOCK) as usize;
            read_exact_at(file, &mut buf[..n], start)?;
        }
        Ok(buf)
    }
}

impl StorageBackend for OverlayBackend {
    fn len(&self) -> Result<u64, BackendIoError> {
        Ok(self.state.lock().map_err(|_| poisoned())?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        let st = self.state.lock().map_err(|_| poisoned())?;
        if offset + out.len() as u64 > st.len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let mut done = 0usize;
        while done < out.len() {
            let pos = offset + done as u64;
            let (index, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(out.len() - done);
            if let Some(b) = st.blocks.get(&index) {
                out[done..done + n].copy_from_slice(&b[within..within + n]);
            } else {
                let block = st.read_block(&self.file, index)?;
                out[done..done + n].copy_from_slice(&block[within..within + n]);
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        if len < st.len {
            // Forget cached blocks past the end and treat the file as shorter, so growth reads zeros.
            st.blocks.retain(|i, _| i * BLOCK < len);
            if let Some(b) = st.blocks.get_mut(&(len / BLOCK)) {
                b[(len % BLOCK) as usize..].fill(0);
            }
            st.file_len = st.file_len.min(len);
        }
        st.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let (index, within) = (pos / BLOCK, (pos % BLOCK) as usize);
            let n = (BLOCK as usize - within).min(data.len() - done);
            let mut block = st.read_block(&self.file, index)?;
            block[within..within + n].copy_from_slice(&data[done..done + n]);
            st.blocks.insert(index, block);
            done += n;
        }
        st.len = st.len.max(offset + data.len() as u64);
        Ok(())
    }
}
