//! Any bytes, with any declared format: the inspector answers, never panics.
#![no_main]

use imaged_diskfmt::{inspect, Format, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = data.to_vec();
    let _ = inspect(&bytes, None, &Policy::default());
    for f in Format::ALL {
        let _ = inspect(&bytes, Some(*f), &Policy::default());
    }
});
