//! A private network namespace per sandbox, with only a loopback interface,
//! and the sandbox's Runtime API listener created *inside* it.
//!
//! A socket belongs to the namespace it was created in, so the node can
//! accept on it from outside while the runtime reaches it at the standard
//! `127.0.0.1:9001` from inside. No sandbox can reach another's Runtime API,
//! the node's own ports, or any network. Needs CAP_SYS_ADMIN (root).

use std::fs::File;
use std::io;
use std::net::TcpListener;

/// The Runtime API port inside a sandbox, as on Lambda.
pub const RUNTIME_API_PORT: u16 = 9001;

/// A network namespace and the listener bound inside it.
pub struct PrivateNetwork {
    /// `/proc/…/ns/net` of the namespace, which a slot's waiter enters (`slot.rs`).
    pub namespace: File,
    pub listener: TcpListener,
}

/// Creates the namespace on a short-lived thread (namespaces are per thread
/// for `unshare`), so the node's own threads never leave the host's.
pub fn create() -> io::Result<PrivateNetwork> {
    std::thread::spawn(|| -> io::Result<PrivateNetwork> {
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        loopback_up()?;
        let listener = TcpListener::bind(("127.0.0.1", RUNTIME_API_PORT))?;
        listener.set_nonblocking(true)?;
        let namespace = File::open("/proc/thread-self/ns/net")?;
        Ok(PrivateNetwork { namespace, listener })
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

/// `ip link set lo up`, through the SIOCSIFFLAGS ioctl.
fn loopback_up() -> io::Result<()> {
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        if unsafe { libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) } < 0 {
            return Err(io::Error::last_os_error());
        }
        unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        if unsafe { libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    unsafe { libc::close(socket) };
    result
}
