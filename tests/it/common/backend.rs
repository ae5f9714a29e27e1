//! In-memory redb storage backends shared by the hardening tests and the `ops_vs_model` fuzz
//! target: a plain one whose bytes survive the `Db` (so a test can "reopen"), and a
//! fault-injecting one that fails or tears the n-th write or sync and then keeps what a real disk
//! could keep after a power cut.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

/// The bytes of an in-memory "disk", shared so they outlive the `Db` that wrote them.
#[derive(Debug, Clone, Default)]
pub struct SharedBytes(Arc<Mutex<Vec<u8>>>);

impl SharedBytes {
    /// A disk holding `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        SharedBytes(Arc::new(Mutex::new(bytes)))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// A fresh backend over these bytes (a "reboot" of the same disk).
    pub fn backend(&self) -> MemBackend {
        MemBackend(self.clone())
    }
}

/// A redb backend over [`SharedBytes`]; `sync_data` is free.
#[derive(Debug)]
pub struct MemBackend(SharedBytes);

fn out_of_range() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the end of the storage")
}

fn read_at(data: &[u8], offset: u64, out: &mut [u8]) -> std::io::Result<()> {
    let start = usize::try_from(offset).map_err(|_| out_of_range())?;
    let end = start.checked_add(out.len()).ok_or_else(out_of_range)?;
    let src = data.get(start..end).ok_or_else(out_of_range)?;
    out.copy_from_slice(src);
    Ok(())
}

fn write_at(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let start = offset as usize;
    let end = start + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

impl redb::StorageBackend for MemBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        read_at(&self.0.lock(), offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.lock().resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        write_at(&mut self.0.lock(), offset, data);
        Ok(())
    }
}

/// How the armed fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The n-th write or sync fails and nothing of it lands; the device is gone afterwards.
    Fail,
    /// The n-th write lands only partly (a prefix of `keep_num/8` of it) and fails; a sync
    /// fails. The device is gone afterwards.
    Tear {
        /// Eighths of the write that land.
        keep_num: u8,
    },
}

/// One operation that reached the device after the last successful sync.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct DiskState {
    /// What a reader sees now (every write applied).
    view: Vec<u8>,
    /// What survives a power cut for sure: the state at the last successful sync.
    durable: Vec<u8>,
    /// Operations since the last successful sync, in order.
    pending: Vec<Pending>,
    /// Counted writes and syncs so far.
    events: u64,
    /// Fail the event with this number (0-based), if armed.
    fail_at: Option<u64>,
    fault: Option<Fault>,
    crashed: bool,
}

/// A disk whose writes are not durable until synced, with a fault that can be armed to strike
/// at the n-th write or sync. Shared (clone it) so it survives the `Db`.
#[derive(Debug, Clone, Default)]
pub struct FaultDisk(Arc<Mutex<DiskState>>);

impl FaultDisk {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A disk whose durable contents are `bytes` (a settled database image).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        FaultDisk(Arc::new(Mutex::new(DiskState { view: bytes.clone(), durable: bytes, ..DiskState::default() })))
    }

    /// A backend writing to this disk.
    pub fn backend(&self) -> FaultBackend {
        FaultBackend(self.clone())
    }

    /// Arms the fault: the event numbered `at` (counted from now) strikes with `fault`.
    pub fn arm(&self, at: u64, fault: Fault) {
        let mut s = self.lock();
        s.fail_at = Some(s.events + at);
        s.fault = Some(fault);
    }

    /// Writes and syncs counted since the disk was made.
    pub fn events(&self) -> u64 {
        self.lock().events
    }

    /// Whether the armed fault struck.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Declares everything written so far durable (as after a clean sync).
    pub fn settle(&self) {
        let mut s = self.lock();
        s.durable = s.view.clone();
        s.pending.clear();
    }

    /// The disk images a power cut could leave: the durable state plus, for each `mask` in
    /// `masks`, the pending operations whose bit is set (bit i for operation i mod 64; resizes
    /// always apply, in order). `u64::MAX` keeps every pending write, 0 none.
    pub fn images_after_power_cut(&self, masks: &[u64]) -> Vec<Vec<u8>> {
        let s = self.lock();
        masks
            .iter()
            .map(|mask| {
                let mut img = s.durable.clone();
                for (i, p) in s.pending.iter().enumerate() {
                    match p {
                        Pending::SetLen(len) => img.resize(*len as usize, 0),
                        Pending::Write { offset, data } => {
                            if mask & (1u64 << (i % 64)) != 0 {
                                write_at(&mut img, *offset, data);
                            }
                        }
                    }
                }
                img
            })
            .collect()
    }

    /// Operations since the last successful sync.
    pub fn pending_len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Counts an event and reports whether the fault strikes it.
    fn strike(s: &mut DiskState) -> Result<Option<Fault>, std::io::Error> {
        if s.crashed {
            return Err(std::io::Error::other("device gone (crashed)"));
        }
        let n = s.events;
        s.events += 1;
        if s.fail_at == Some(n) {
            s.crashed = true;
            return Ok(s.fault);
        }
        Ok(None)
    }
}

/// A redb backend over a [`FaultDisk`].
#[derive(Debug)]
pub struct FaultBackend(FaultDisk);

impl redb::StorageBackend for FaultBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        let s = self.0.lock();
        if s.crashed {
            return Err(std::io::Error::other("device gone (crashed)"));
        }
        Ok(s.view.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.0.lock();
        if s.crashed {
            return Err(std::io::Error::other("device gone (crashed)"));
        }
        read_at(&s.view, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut s = self.0.lock();
        if s.crashed {
            return Err(std::io::Error::other("device gone (crashed)"));
        }
        s.view.resize(len as usize, 0);
        s.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut s = self.0.lock();
        match FaultDisk::strike(&mut s)? {
            Some(_) => Err(std::io::Error::other("injected sync failure")),
            None => {
                s.durable = s.view.clone();
                s.pending.clear();
                Ok(())
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut s = self.0.lock();
        match FaultDisk::strike(&mut s)? {
            Some(Fault::Fail) => Err(std::io::Error::other("injected write failure")),
            Some(Fault::Tear { keep_num }) => {
                let keep = data.len() * usize::from(keep_num.min(8)) / 8;
                let part = data[..keep].to_vec();
                write_at(&mut s.view, offset, &part);
                s.pending.push(Pending::Write { offset, data: part });
                Err(std::io::Error::other("injected torn write"))
            }
            None => {
                write_at(&mut s.view, offset, data);
                s.pending.push(Pending::Write { offset, data: data.to_vec() });
                Ok(())
            }
        }
    }
}
