//! Bytes the inspector accepts as qcow2 are read and mapped without panics.
#![no_main]

use imaged_diskfmt::{inspect, Format, Policy, Qcow2Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = data.to_vec();
    let policy = Policy { max_virtual_size: 1 << 30 };
    if inspect(&bytes, None, &policy).is_ok_and(|i| i.format == Format::Qcow2) {
        if let Ok(r) = Qcow2Reader::open(&bytes) {
            let _ = r.map(0, r.virtual_size());
            let mut buf = vec![0u8; 128 * 1024];
            let len = (buf.len() as u64).min(r.virtual_size()) as usize;
            let _ = r.read_at(0, &mut buf[..len]);
        }
    }
});
