//! Opening files and directories as root without following symbolic links (`openat`, `O_NOFOLLOW`), for paths that users can change under us.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path};

/// Wraps a file descriptor returned by a successful `open`-like call.
fn owned_file(fd: libc::c_int) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody
    // else; the File closes it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC, mode)`.
pub(crate) fn open_at(dir: &File, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is an
    // open descriptor for the duration of the call.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    owned_file(fd)
}

/// Whether an error of [`open_at`] or [`open_dir`] means that a symbolic
/// link (`ELOOP`) or something other than a directory (`ENOTDIR`) was in
/// the way.
pub(crate) fn is_link_or_not_dir(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR))
}

/// Opens the directory at the absolute `path` one component at a time from
/// `/`, each with `O_NOFOLLOW | O_DIRECTORY`: the result is a directory
/// reached through real directories only, whatever links are swapped into
/// the path meanwhile (such a link makes this fail, see
/// [`is_link_or_not_dir`]). `.` is skipped; `..` and relative paths are
/// refused (`EINVAL`): the caller passes a resolved path.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "not an absolute resolved path");
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(invalid());
    }
    let mut dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open("/")?;
    for component in components {
        let name = match component {
            Component::Normal(name) => name,
            Component::CurDir => continue,
            _ => return Err(invalid()),
        };
        let name = CString::new(name.as_bytes()).map_err(|_| invalid())?;
        dir = open_at(&dir, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn opens_a_real_directory_and_refuses_links_on_the_way() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("a/b");
        std::fs::create_dir_all(&real).unwrap();
        let opened = open_dir(&real).unwrap();
        let want = std::fs::metadata(&real).unwrap();
        let got = opened.metadata().unwrap();
        assert_eq!((got.dev(), got.ino()), (want.dev(), want.ino()));

        // A link as the last component, or in the middle.
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("a/link")).unwrap();
        std::fs::create_dir(outside.join("c")).unwrap();
        for path in [tmp.path().join("a/link"), tmp.path().join("a/link/c")] {
            let err = open_dir(&path).unwrap_err();
            assert!(is_link_or_not_dir(&err), "{}: {err}", path.display());
        }
        // A file is not a directory.
        std::fs::write(tmp.path().join("a/file"), b"x").unwrap();
        assert!(is_link_or_not_dir(
            &open_dir(&tmp.path().join("a/file")).unwrap_err()
        ));
        // `..` and relative paths are for the caller to resolve.
        for path in ["relative/x", "/tmp/../etc"] {
            let err = open_dir(Path::new(path)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path}");
        }
    }
}
