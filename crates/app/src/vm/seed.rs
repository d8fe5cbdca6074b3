//! The NoCloud seed a guest reads at boot, as cloud-init expects it: a small FAT disk labelled
//! `cidata` holding `meta-data` (instance id, host name), `user-data` (the instance's
//! `UserData`, decoded, as given) and `vendor-data` (a `#cloud-config` with the login password
//! when one was set).

use std::io::{Cursor, Write};

/// What goes into a seed.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    /// `instance-id`.
    pub instance_id: String,
    /// `local-hostname`.
    pub host_name: String,
    /// The user data, decoded.
    pub user_data: Vec<u8>,
    /// The root password, if one was set.
    pub password: Option<String>,
}

/// The seed's size: FAT12 holds it comfortably (user data is at most 16 KB).
const SEED_BYTES: usize = 1 << 20;

/// The FAT image of `seed`.
pub fn build(seed: &Seed) -> std::io::Result<Vec<u8>> {
    let mut disk = Cursor::new(vec![0u8; SEED_BYTES]);
    fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new().volume_label(*b"cidata     "))?;
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new())?;
        let root = fs.root_dir();
        let meta = format!(
            "instance-id: {}\nlocal-hostname: {}\n",
            yaml_scalar(&seed.instance_id),
            yaml_scalar(&seed.host_name)
        );
        root.create_file("meta-data")?.write_all(meta.as_bytes())?;
        root.create_file("user-data")?.write_all(&seed.user_data)?;
        let mut vendor = String::from("#cloud-config\n");
        if let Some(pw) = &seed.password {
            // The password is root's (Tencent's Linux login user), and root may log in with it
            // over SSH, as on Tencent's own images.
            vendor.push_str(&format!(
                "chpasswd:\n  expire: false\n  users:\n    - name: root\n      password: {}\n      type: text\n\
                 ssh_pwauth: true\ndisable_root: false\nwrite_files:\n  - path: /etc/ssh/sshd_config.d/50-imaged.conf\n    \
                 content: \"PermitRootLogin yes\\n\"\n",
                yaml_scalar(pw)
            ));
        }
        root.create_file("vendor-data")?.write_all(vendor.as_bytes())?;
        drop(root);
        fs.unmount()?;
    }
    Ok(disk.into_inner())
}

/// A YAML plain scalar when `s` is one safely, else a double-quoted one.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_seed_is_a_fat_volume_labelled_cidata_with_the_three_files() {
        let image = build(&Seed {
            instance_id: "ins-abcdefgh".into(),
            host_name: "web-1".into(),
            user_data: b"#!/bin/sh\necho hi\n".to_vec(),
            password: Some("pa ss:w\"rd".into()),
        })
        .expect("seed");
        let mut disk = Cursor::new(image);
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).expect("a FAT volume");
        assert_eq!(fs.volume_label().trim_end(), "cidata");
        let read = |name: &str| {
            let mut s = String::new();
            fs.root_dir().open_file(name).expect("the file").read_to_string(&mut s).expect("text");
            s
        };
        assert_eq!(read("meta-data"), "instance-id: ins-abcdefgh\nlocal-hostname: web-1\n");
        assert_eq!(read("user-data"), "#!/bin/sh\necho hi\n");
        let vendor = read("vendor-data");
        assert!(
            vendor.starts_with("#cloud-config\nchpasswd:\n  expire: false\n  users:\n    - name: root\n"),
            "{vendor}"
        );
        assert!(vendor.contains("\n      password: \"pa ss:w\\\"rd\"\n      type: text\n"), "{vendor}");
        assert!(vendor.contains("PermitRootLogin yes"), "{vendor}");
    }
}
