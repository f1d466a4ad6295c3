//! Who a local user is: the passwd database (NSS: files, LDAP, AD, ...) looked up with `getpwnam_r`, the home directory kept byte for byte.
//!
//! The one lookup for rsync's task user and ssh's authorized_keys owner:
//! the buffer grows on `ERANGE` (directory users can have long entries),
//! and a home that is not UTF-8 stays the path it is instead of being
//! replaced by a lossy copy that names another directory.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A local account, as child processes run under it and as its home is
/// found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Empty when the database sets none.
    pub home: PathBuf,
}

/// Looks `name` up in the passwd database (NSS: files, LDAP, AD, ...).
/// Blocking; call it on a blocking thread.
pub fn lookup_user(name: &str) -> io::Result<Option<Account>> {
    // No account can have a name with a NUL byte in it.
    let Ok(c_user) = CString::new(name) else {
        return Ok(None);
    };
    let mut buf: Vec<u8> = vec![0; 4096];
    loop {
        // SAFETY: passwd is a plain C struct for which all-zero is valid;
        // getpwnam_r fills it with pointers into `buf`, which outlives
        // every use of them below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c_user.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        // POSIX allows these for "no such user" besides rc 0 with no result.
        if result.is_null() && matches!(rc, 0 | libc::ENOENT | libc::ESRCH) {
            return Ok(None);
        }
        if rc != 0 || result.is_null() {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let home = if pwd.pw_dir.is_null() {
            PathBuf::new()
        } else {
            // SAFETY: set by getpwnam_r to a NUL-terminated string in `buf`.
            let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
            PathBuf::from(OsStr::from_bytes(dir.to_bytes()))
        };
        return Ok(Some(Account {
            name: name.to_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn looks_up_users() {
        let root = tokio::task::spawn_blocking(|| lookup_user("root"))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(root.uid, 0);
        assert!(root.home.is_absolute());
        let none = tokio::task::spawn_blocking(|| lookup_user("nasfleet-no-such-user"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(none, None);
    }
}
