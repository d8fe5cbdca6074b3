//! Identifiers: image and instance ids (`img-`/`ins-` + 8 lower-case alphanumerics), account
//! ids, API key ids.
//!
//! Generation takes random bytes from the caller so that this crate stays pure.

use std::fmt;

/// The alphabet of the random part of resource ids: lower-case letters and digits.
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The alphabet of SecretIds after their `AKID` prefix (Tencent's keys mix cases and digits).
const KEY_ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Why a string is not a well-formed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The image id does not look like `img-` followed by 8 lower-case letters or digits.
    #[error("malformed image id `{0}`")]
    MalformedImageId(String),
    /// The instance id does not look like `ins-` followed by 8 lower-case letters or digits.
    #[error("malformed instance id `{0}`")]
    MalformedInstanceId(String),
    /// The cluster id does not look like `cls-` followed by 8 lower-case letters or digits.
    #[error("malformed cluster id `{0}`")]
    MalformedClusterId(String),
    /// The node pool id does not look like `np-` followed by 8 lower-case letters or digits.
    #[error("malformed node pool id `{0}`")]
    MalformedNodePoolId(String),
    /// The beta application id does not look like `app-` followed by 8 lower-case letters or digits.
    #[error("malformed application id `{0}`")]
    MalformedApplicationId(String),
    /// The message id does not look like `msg-` followed by 8 lower-case letters or digits.
    #[error("malformed message id `{0}`")]
    MalformedMessageId(String),
    /// The account id is not a positive decimal number.
    #[error("malformed account id `{0}`")]
    MalformedAccountId(String),
}

fn pick(alphabet: &[u8], byte: u8) -> char {
    char::from(alphabet[usize::from(byte) % alphabet.len()])
}

macro_rules! resource_id {
    ($(#[$m:meta])* $name:ident, $prefix:literal, $err:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The fixed prefix of every id of this kind.
            pub const PREFIX: &'static str = $prefix;

            /// Parses and validates an id: the prefix and 8 lower-case letters or digits.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let ok = s.len() == Self::PREFIX.len() + 8
                    && s.starts_with(Self::PREFIX)
                    && s[Self::PREFIX.len()..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(IdError::$err(s.to_owned()))
                }
            }

            /// Makes a new id from 8 random bytes.
            pub fn from_random(bytes: [u8; 8]) -> Self {
                let mut s = String::from(Self::PREFIX);
                s.extend(bytes.iter().map(|b| pick(ID_ALPHABET, *b)));
                Self(s)
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

resource_id! {
    /// An image id such as `img-9qabwvbn`.
    ImageId, "img-", MalformedImageId
}

resource_id! {
    /// An instance id such as `ins-r8hr2upy`.
    InstanceId, "ins-", MalformedInstanceId
}

resource_id! {
    /// A TKE cluster id such as `cls-7ph3twqe`.
    ClusterId, "cls-", MalformedClusterId
}

resource_id! {
    /// A TKE node pool id such as `np-3ua8ci0e`.
    NodePoolId, "np-", MalformedNodePoolId
}

resource_id! {
    /// A beta image application id such as `app-k2m9x0qd`.
    ApplicationId, "app-", MalformedApplicationId
}

resource_id! {
    /// A message-centre message id such as `msg-5v1qzr8a`.
    MessageId, "msg-", MalformedMessageId
}

/// A root account id: a positive decimal number (Tencent's "UIN"), e.g. `100000000001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AccountId(pub u64);

impl AccountId {
    /// Parses a decimal account id as clients send it (a string).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s.parse::<u64>() {
            Ok(n) if n > 0 && !s.starts_with('+') && !s.starts_with('0') => Ok(Self(n)),
            _ => Err(IdError::MalformedAccountId(s.to_owned())),
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An API key id (Tencent's `SecretId`): `AKID` followed by 32 letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SecretId(pub String);

impl SecretId {
    /// Makes a new key id from 32 random bytes.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let mut s = String::from("AKID");
        s.extend(bytes.iter().map(|b| pick(KEY_ALPHABET, *b)));
        Self(s)
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes a secret key (the HMAC key) from 32 random bytes: 40 characters of the key alphabet.
pub fn secret_key_from_random(bytes: [u8; 40]) -> String {
    bytes.iter().map(|b| pick(KEY_ALPHABET, *b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_id_accepts_seed_ids_and_rejects_lookalikes() {
        for ok in ["img-eb30mz89", "img-9qabwvbn", "img-22trbn9x"] {
            assert_eq!(ImageId::parse(ok).map(|i| i.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["img-EB30MZ89", "img-eb30mz8", "img-eb30mz899", "ins-eb30mz89", "", "img-eb30mz8_"] {
            assert!(ImageId::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn instance_ids_have_their_own_prefix() {
        assert!(InstanceId::parse("ins-r8hr2upy").is_ok());
        for bad in ["img-r8hr2upy", "ins-R8HR2UPY", "ins-r8hr2up", "ins-"] {
            assert!(InstanceId::parse(bad).is_err(), "{bad} must be refused");
        }
        let id = InstanceId::from_random([3; 8]);
        assert_eq!(InstanceId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn tke_ids_have_their_prefixes() {
        assert!(ClusterId::parse("cls-7ph3twqe").is_ok());
        assert!(NodePoolId::parse("np-3ua8ci0e").is_ok());
        for bad in ["cls-7PH3TWQE", "np-3ua8ci0", "cls-", "np-3ua8ci0e1", "ins-7ph3twqe"] {
            assert!(ClusterId::parse(bad).is_err() && NodePoolId::parse(bad).is_err(), "{bad} must be refused");
        }
        let id = NodePoolId::from_random([9; 8]);
        assert_eq!(NodePoolId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn generated_image_ids_parse() {
        for seed in 0..=255u8 {
            let id = ImageId::from_random([seed; 8]);
            assert_eq!(ImageId::parse(id.as_str()), Ok(id));
        }
    }

    #[test]
    fn account_ids_are_positive_decimals_without_leading_zeros() {
        assert_eq!(AccountId::parse("100000000001"), Ok(AccountId(100_000_000_001)));
        for bad in ["0", "-1", "+5", "012", "abc", ""] {
            assert!(AccountId::parse(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn secret_ids_have_the_akid_prefix_and_36_chars() {
        let id = SecretId::from_random([7; 32]);
        assert!(id.0.starts_with("AKID"));
        assert_eq!(id.0.len(), 36);
        assert_eq!(secret_key_from_random([9; 40]).len(), 40);
    }
}
