//! Opening a disk store's file: created anew, preallocated, with `O_DIRECT` where the file
//! system takes it and buffered I/O where it does not.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::aligned::{ALIGN, AlignedBuf};

/// The store's file and whether it bypasses the page cache.
pub(super) struct Opened {
    pub(super) file: File,
    pub(super) direct: bool,
}

/// Create (or truncate) the file at `path`, reserve `bytes` of disk for it, and open it for
/// direct I/O when `want_direct` and the file system allows it.
pub(super) fn open(path: &Path, bytes: u64, want_direct: bool) -> io::Result<Opened> {
    if want_direct {
        match options(true, true).open(path) {
            Ok(file) => {
                allocate(&file, bytes)?;
                match probe(&file, bytes) {
                    Ok(()) => return Ok(Opened { file, direct: true }),
                    Err(error) if refuses_direct(&error) => warn_buffered(path, &error),
                    Err(error) => return Err(error),
                }
                // Opened but unusable: the file is allocated already, keep it as it is.
                let file = options(false, false).open(path)?;
                return Ok(Opened {
                    file,
                    direct: false,
                });
            }
            Err(error) if refuses_direct(&error) => warn_buffered(path, &error),
            Err(error) => return Err(error),
        }
    }
    let file = options(false, true).open(path)?;
    allocate(&file, bytes)?;
    Ok(Opened {
        file,
        direct: false,
    })
}

fn options(direct: bool, truncate: bool) -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate);
    if direct {
        options.custom_flags(libc::O_DIRECT);
    }
    options
}

/// The errors a file system gives when it does not do direct I/O (tmpfs on older kernels,
/// some FUSE and network file systems).
fn refuses_direct(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

fn warn_buffered(path: &Path, error: &io::Error) {
    tracing::warn!(
        path = %path.display(),
        %error,
        "the file system refuses O_DIRECT; this disk store reads and writes through the page cache"
    );
}

/// Reserve the file's blocks up front (`fallocate`), so a full disk shows now rather than on a
/// later write; where the file system cannot, only set its length.
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(errno) if errno == rustix::io::Errno::OPNOTSUPP => file.set_len(bytes),
        Err(errno) => Err(errno.into()),
    }
}

/// One aligned write and read of the first page: some file systems accept `O_DIRECT` at open
/// and refuse it on the first I/O.
fn probe(file: &File, bytes: u64) -> io::Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    let mut page = AlignedBuf::new(ALIGN);
    file.write_all_at(page.as_bytes(), 0)?;
    file.read_exact_at(page.as_bytes_mut(), 0)
}
