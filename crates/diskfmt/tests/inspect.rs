//! The inspector against qemu-img made images (generated here, never committed) and crafted
//! variants of them, one per rejection class.

use std::path::{Path, PathBuf};
use std::process::Command;

use imaged_diskfmt::{inspect, ExtentKind, Format, Policy, Qcow2Reader, Reason};

const MIB: usize = 1 << 20;

/// 4 MiB: data, a zero MiB, text, zeros.
fn source() -> Vec<u8> {
    let mut d = vec![0u8; 4 * MIB];
    let mut s = 0x1234_5678_9abc_def1u64;
    for b in d[..MIB].iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *b = s as u8;
    }
    d[2 * MIB..2 * MIB + 4096].copy_from_slice(&b"imaged!\n".repeat(512));
    d
}

struct Fixtures {
    dir: tempfile::TempDir,
    raw: PathBuf,
}

fn qemu_img(args: &[&str]) -> bool {
    let out = Command::new("qemu-img").args(args).output().expect("qemu-img runs");
    if !out.status.success() {
        eprintln!("qemu-img {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

impl Fixtures {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("src.raw");
        std::fs::write(&raw, source()).expect("write");
        Self { dir, raw }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn convert(&self, name: &str, fmt: &str, opts: &[&str]) -> PathBuf {
        let out = self.path(name);
        let mut args = vec!["convert", "-f", "raw", "-O", fmt];
        args.extend_from_slice(opts);
        let (src, dst) = (self.raw.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
        args.push(&src);
        args.push(&dst);
        assert!(qemu_img(&args), "conversion to {fmt} {opts:?}");
        out
    }
}

fn check(path: &Path, declared: Option<Format>) -> Result<imaged_diskfmt::Inspection, Reason> {
    let f = std::fs::File::open(path).expect("open");
    inspect(&f, declared, &Policy::default()).map_err(|r| r.reason)
}

fn check_bytes(bytes: &[u8]) -> Result<Format, Reason> {
    inspect(&bytes.to_vec(), None, &Policy::default()).map(|i| i.format).map_err(|r| r.reason)
}

#[test]
fn qemu_img_made_images_of_every_accepted_kind_are_accepted() {
    let fx = Fixtures::new();
    let cases: Vec<(PathBuf, Format, Option<&str>)> = vec![
        (fx.raw.clone(), Format::Raw, None),
        (fx.convert("v3.qcow2", "qcow2", &[]), Format::Qcow2, Some("v3")),
        (fx.convert("v2.qcow2", "qcow2", &["-o", "compat=0.10"]), Format::Qcow2, Some("v2")),
        (fx.convert("c.qcow2", "qcow2", &["-c"]), Format::Qcow2, Some("v3")),
        (fx.convert("s.vmdk", "vmdk", &["-o", "subformat=monolithicSparse"]), Format::Vmdk, Some("monolithicSparse")),
        (fx.convert("so.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]), Format::Vmdk, Some("streamOptimized")),
        (fx.convert("f.vhd", "vpc", &["-o", "subformat=fixed,force_size=on"]), Format::Vhd, Some("fixed")),
        (fx.convert("d.vhd", "vpc", &["-o", "subformat=dynamic,force_size=on"]), Format::Vhd, Some("dynamic")),
        (fx.convert("x.vhdx", "vhdx", &[]), Format::Vhdx, None),
    ];
    for (path, format, sub) in cases {
        let i = check(&path, Some(format)).unwrap_or_else(|r| panic!("{} refused: {r}", path.display()));
        assert_eq!(i.format, format, "{}", path.display());
        assert_eq!(i.virtual_size, 4 * MIB as u64, "{}", path.display());
        if let Some(sub) = sub {
            assert_eq!(i.subformat.as_deref(), Some(sub), "{}", path.display());
        }
    }
}

#[test]
fn the_native_qcow2_reader_reads_what_qemu_wrote_and_maps_zeros() {
    let fx = Fixtures::new();
    let expected = source();
    for (name, opts) in [
        ("plain.qcow2", vec![]),
        ("compressed.qcow2", vec!["-c"]),
        ("compressed-zstd.qcow2", vec!["-c", "-o", "compression_type=zstd"]),
        ("v2.qcow2", vec!["-o", "compat=0.10"]),
    ] {
        let path = fx.convert(name, "qcow2", &opts);
        let f = std::fs::File::open(&path).expect("open");
        let r = Qcow2Reader::open(&f).expect("open reader");
        assert_eq!(r.virtual_size(), expected.len() as u64);
        let mut got = vec![0u8; expected.len()];
        r.read_at(0, &mut got).expect("read");
        assert!(got == expected, "{name}: guest bytes differ");
        let mut piece = vec![0u8; 1000];
        r.read_at(2 * MIB as u64 - 10, &mut piece).expect("unaligned read");
        assert_eq!(piece[..], expected[2 * MIB - 10..2 * MIB + 990]);
        let map = r.map(MIB as u64, MIB as u64).expect("map");
        assert_eq!(map, vec![imaged_diskfmt::Extent { offset: MIB as u64, len: MIB as u64, kind: ExtentKind::Zero }]);
        let data_kind = r.map(2 * MIB as u64, 4096).expect("map")[0].kind;
        let want = if name.starts_with("compressed") { ExtentKind::Compressed } else { ExtentKind::Data };
        assert_eq!(data_kind, want, "{name}");
    }
}

#[test]
fn an_overlay_maps_what_the_guest_wrote_and_falls_through_to_its_backing_elsewhere() {
    let fx = Fixtures::new();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let top = fx.path("overlay.qcow2");
    assert!(qemu_img(&["create", "-f", "qcow2", "-b", &s(&fx.raw), "-F", "raw", &s(&top)]));
    let io = |cmd: &str| {
        let out = Command::new("qemu-io").args(["-f", "qcow2", "-c", cmd]).arg(&top).output().expect("qemu-io runs");
        assert!(out.status.success(), "qemu-io {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    };
    io("write -P 0xab 3145728 4096");
    io("write -z 0 65536");
    let f = std::fs::File::open(&top).expect("open");
    assert_eq!(Qcow2Reader::open(&f).err().map(|r| r.reason), Some(Reason::BackingFile), "never for user images");
    let r = Qcow2Reader::open_overlay(&f).expect("open overlay");
    assert_eq!(r.virtual_size(), source().len() as u64);
    let kinds = |off: u64, len: u64| r.map(off, len).expect("map").iter().map(|e| e.kind).collect::<Vec<_>>();
    assert_eq!(kinds(0, 65536), [ExtentKind::Zero], "an explicit zero write is a zero cluster");
    assert_eq!(kinds(MIB as u64, MIB as u64), [ExtentKind::Backing]);
    assert_eq!(kinds(3 * MIB as u64, 65536), [ExtentKind::Data], "a partial write allocates its whole cluster");
    assert_eq!(kinds(3 * MIB as u64 - 65536, 3 * 65536), [ExtentKind::Backing, ExtentKind::Data, ExtentKind::Backing]);
    let mut written = vec![0u8; 4096];
    r.read_at(3 * MIB as u64, &mut written).expect("read the guest's write");
    assert!(written.iter().all(|b| *b == 0xab));
    assert!(r.read_at(MIB as u64, &mut written).is_err(), "backing ranges are read from the backing file");
}

#[test]
fn qemu_img_made_dangerous_images_are_refused_with_their_reason() {
    let fx = Fixtures::new();
    let base = fx.convert("base.qcow2", "qcow2", &[]);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let top = fx.path("top.qcow2");
    assert!(qemu_img(&["create", "-f", "qcow2", "-b", &s(&base), "-F", "qcow2", &s(&top)]));
    assert_eq!(check(&top, None).map(|i| i.format), Err(Reason::BackingFile));
    let ext = fx.path("ext.qcow2");
    if qemu_img(&["create", "-f", "qcow2", "-o", &format!("data_file={}", s(&fx.path("ext.data"))), &s(&ext), "4M"]) {
        assert_eq!(check(&ext, None).map(|i| i.format), Err(Reason::DataFile));
    }
    let enc = fx.path("enc.qcow2");
    if qemu_img(&[
        "create",
        "--object",
        "secret,id=sec0,data=abc",
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0",
        &s(&enc),
        "4M",
    ]) {
        assert_eq!(check(&enc, None).map(|i| i.format), Err(Reason::Encrypted));
    }
    let flat = fx.path("flat.vmdk");
    if qemu_img(&["create", "-f", "vmdk", "-o", "subformat=monolithicFlat", &s(&flat), "4M"]) {
        assert_eq!(check(&flat, None).map(|i| i.format), Err(Reason::ExternalExtent));
    }
    assert_eq!(
        check(&fx.convert("c2.qcow2", "qcow2", &[]), Some(Format::Raw)).map(|i| i.format),
        Err(Reason::FormatMismatch)
    );
    assert_eq!(check(&fx.raw, Some(Format::Qcow2)).map(|i| i.format), Err(Reason::FormatMismatch));
}

/// Reads a qemu-img made qcow2 into memory so its header can be edited.
fn qcow2_bytes(fx: &Fixtures) -> Vec<u8> {
    std::fs::read(fx.convert("edit.qcow2", "qcow2", &[])).expect("read")
}

fn set_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn each_qcow2_header_defect_has_its_reason() {
    let fx = Fixtures::new();
    let good = qcow2_bytes(&fx);
    assert_eq!(check_bytes(&good), Ok(Format::Qcow2));
    type Edit = fn(&mut Vec<u8>);
    let cases: &[(&str, Edit, Reason)] = &[
        ("backing file offset", |b| set_be64(b, 8, 4096), Reason::BackingFile),
        ("backing file size", |b| set_be32(b, 16, 8), Reason::BackingFile),
        ("crypt method", |b| set_be32(b, 32, 1), Reason::Encrypted),
        ("version 1", |b| set_be32(b, 4, 1), Reason::UnknownFormat),
        ("version 4", |b| set_be32(b, 4, 4), Reason::UnknownFormat),
        ("cluster bits", |b| set_be32(b, 20, 30), Reason::Corrupt),
        ("corrupt bit", |b| set_be64(b, 72, 1 << 1), Reason::Corrupt),
        ("external data file bit", |b| set_be64(b, 72, 1 << 2), Reason::DataFile),
        ("extended L2 bit", |b| set_be64(b, 72, 1 << 4), Reason::UnknownFormat),
        ("unknown incompatible bit", |b| set_be64(b, 72, 1 << 9), Reason::UnknownFormat),
        ("data-file-raw autoclear bit", |b| set_be64(b, 88, 1 << 1), Reason::DataFile),
        ("L1 table outside the file", |b| set_be64(b, 40, 1 << 40), Reason::Corrupt),
        ("refcount table outside the file", |b| set_be64(b, 48, 1 << 40), Reason::Corrupt),
        ("L1 too small for the size", |b| set_be64(b, 24, 1 << 40), Reason::Corrupt),
        (
            "crypto header extension",
            |b| {
                let ext = usize::try_from(u32::from_be_bytes([b[100], b[101], b[102], b[103]])).expect("len");
                set_be32(b, ext, 0x0537_be77);
                set_be32(b, ext + 4, 16);
            },
            Reason::Encrypted,
        ),
        (
            "data file name extension",
            |b| {
                let ext = usize::try_from(u32::from_be_bytes([b[100], b[101], b[102], b[103]])).expect("len");
                set_be32(b, ext, 0x4441_5441);
                set_be32(b, ext + 4, 11);
                b[ext + 8..ext + 19].copy_from_slice(b"/etc/shadow");
            },
            Reason::DataFile,
        ),
    ];
    for (what, edit, reason) in cases {
        let mut b = good.clone();
        edit(&mut b);
        assert_eq!(check_bytes(&b), Err(*reason), "{what}");
    }
    let small = Policy { max_virtual_size: MIB as u64 };
    assert_eq!(inspect(&good, None, &small).map_err(|r| r.reason).map(|i| i.format), Err(Reason::TooLarge));
}

#[test]
fn polyglots_are_refused_but_hybrid_isos_are_isos() {
    let fx = Fixtures::new();
    let qcow = qcow2_bytes(&fx);
    let vhd = std::fs::read(fx.convert("f.vhd", "vpc", &["-o", "subformat=fixed,force_size=on"])).expect("vhd");
    let mut with_footer = qcow.clone();
    with_footer.extend_from_slice(&vhd[vhd.len() - 512..]);
    assert_eq!(check_bytes(&with_footer), Err(Reason::Polyglot), "qcow2 + VHD footer");
    let mut with_iso = qcow.clone();
    with_iso.resize(with_iso.len().max(64 * 1024), 0);
    with_iso[32768] = 1;
    with_iso[32769..32774].copy_from_slice(b"CD001");
    assert_eq!(check_bytes(&with_iso), Err(Reason::Polyglot), "qcow2 + ISO descriptor");

    let mut iso = vec![0u8; 64 * 1024];
    iso[32768] = 1;
    iso[32769..32774].copy_from_slice(b"CD001");
    iso[32768 + 80..32768 + 84].copy_from_slice(&32u32.to_le_bytes());
    iso[32768 + 128..32768 + 130].copy_from_slice(&2048u16.to_le_bytes());
    assert_eq!(check_bytes(&iso), Ok(Format::Iso));
    iso[510] = 0x55;
    iso[511] = 0xaa;
    iso[446] = 0x80;
    iso[450] = 0x17;
    assert_eq!(check_bytes(&iso), Ok(Format::Iso), "an ISO with an MBR is a hybrid ISO");
}

/// Writes `bytes` at `offset`, growing the image if needed.
fn patch(image: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if image.len() < offset + bytes.len() {
        image.resize(offset + bytes.len(), 0);
    }
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn every_pair_of_formats_partition_tables_and_iso_descriptors_is_a_polyglot() {
    let fx = Fixtures::new();
    let read = |p: PathBuf| std::fs::read(p).expect("read");
    let fixed_vhd = read(fx.convert("pf.vhd", "vpc", &["-o", "subformat=fixed,force_size=on"]));
    let footer = fixed_vhd[fixed_vhd.len() - 512..].to_vec();
    // Images whose first sectors are their own header, as qemu-img writes them.
    let containers = [
        ("qcow2", read(fx.convert("p.qcow2", "qcow2", &[]))),
        ("vmdk", read(fx.convert("p.vmdk", "vmdk", &["-o", "subformat=monolithicSparse"]))),
        ("vmdk-stream", read(fx.convert("ps.vmdk", "vmdk", &["-o", "subformat=streamOptimized"]))),
        ("vhdx", read(fx.convert("p.vhdx", "vhdx", &[]))),
        ("vhd-dynamic", read(fx.convert("pd.vhd", "vpc", &["-o", "subformat=dynamic,force_size=on"]))),
    ];
    let mut iso_descriptor = vec![1u8];
    iso_descriptor.extend_from_slice(b"CD001");
    let others: [(&str, usize, Vec<u8>); 5] = [
        ("MBR", 510, vec![0x55, 0xaa]),
        ("GPT", 512, GPT.to_vec()),
        ("GPT 4K", 4096, GPT.to_vec()),
        ("ISO descriptor", 32768, iso_descriptor),
        ("VHD footer", usize::MAX, footer.clone()),
    ];
    for (name, image) in &containers {
        assert!(check_bytes(image).is_ok(), "{name} alone is accepted");
        for (other, at, bytes) in &others {
            let mut poly = image.clone();
            let at = if *at == usize::MAX { poly.len() - if *name == "vhd-dynamic" { 512 } else { 0 } } else { *at };
            if *other == "VHD footer" && *name == "vhd-dynamic" {
                continue; // the footer at its end is its own
            }
            patch(&mut poly, at, bytes);
            assert_eq!(check_bytes(&poly), Err(Reason::Polyglot), "{name} + {other}");
        }
    }
    // A raw disk with a partition table is a raw disk; with a VHD footer it is a fixed VHD.
    let mut raw = source();
    patch(&mut raw, 510, &[0x55, 0xaa]);
    patch(&mut raw, 512, GPT);
    assert_eq!(check_bytes(&raw), Ok(Format::Raw));
    assert_eq!(check_bytes(&fixed_vhd), Ok(Format::Vhd));
    let mut fixed_with_mbr = fixed_vhd.clone();
    patch(&mut fixed_with_mbr, 510, &[0x55, 0xaa]);
    assert_eq!(check_bytes(&fixed_with_mbr), Ok(Format::Vhd), "a fixed VHD's first sector is its guest's MBR");
    // A fixed VHD that is also an ISO is both.
    let mut vhd_iso = fixed_vhd.clone();
    patch(&mut vhd_iso, 32768, b"\x01CD001");
    assert_eq!(check_bytes(&vhd_iso), Err(Reason::Polyglot), "fixed VHD + ISO descriptor");
}

const GPT: &[u8; 8] = b"EFI PART";

#[test]
fn empty_odd_sized_compressed_and_unwanted_files_are_refused() {
    assert_eq!(check_bytes(&[]), Err(Reason::Corrupt));
    assert_eq!(check_bytes(&[0u8; 1000]), Err(Reason::Corrupt));
    let mut gz = vec![0x1f, 0x8b, 8, 0];
    gz.resize(4096, 0);
    assert_eq!(check_bytes(&gz), Err(Reason::UnknownFormat));
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.resize(4096, 0);
    assert_eq!(check_bytes(&zst), Err(Reason::UnknownFormat));
    for magic in [&b"QED\0"[..], b"LUKS\xba\xbe", b"# Disk DescriptorFile\n"] {
        let mut b = magic.to_vec();
        b.resize(4096, 0);
        assert!(check_bytes(&b).is_err(), "{magic:?}");
    }
    let mut luks = b"LUKS\xba\xbe".to_vec();
    luks.resize(4096, 0);
    assert_eq!(check_bytes(&luks), Err(Reason::Encrypted));
    assert_eq!(check_bytes(&vec![0u8; 4096]), Ok(Format::Raw));
}

#[test]
fn mutated_headers_never_panic_the_inspector_or_the_reader() {
    let fx = Fixtures::new();
    let seeds = [
        std::fs::read(fx.convert("m.qcow2", "qcow2", &[])).expect("qcow2"),
        std::fs::read(fx.convert("mc.qcow2", "qcow2", &["-c"])).expect("qcow2 c"),
        std::fs::read(fx.convert("m.vmdk", "vmdk", &["-o", "subformat=streamOptimized"])).expect("vmdk"),
        std::fs::read(fx.convert("m.vhd", "vpc", &["-o", "subformat=dynamic"])).expect("vhd"),
        std::fs::read(fx.convert("m.vhdx", "vhdx", &[])).expect("vhdx"),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..2000 {
        let mut b = seeds[round % seeds.len()].clone();
        for _ in 0..(1 + next() % 4) {
            let window = if next() % 2 == 0 { 512 } else { b.len().min(300 * 1024) };
            let at = usize::try_from(next()).unwrap_or(0) % window.max(1);
            b[at] = next() as u8;
        }
        if let Ok(i) = inspect(&b, None, &Policy::default()) {
            if i.format == Format::Qcow2 {
                if let Ok(r) = Qcow2Reader::open(&b) {
                    let _ = r.map(0, r.virtual_size());
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = r.read_at(0, &mut buf);
                }
            }
        }
    }
}
