//! The Blynk hardware command and status code tables (docs/reference/blynk-protocol.md §1.2 and
//! §1.3) as enums.
//!
//! Both enums keep an `Unknown` variant so that a frame with a code we do not know still decodes:
//! the session answers it with `ILLEGAL_COMMAND` instead of losing its place in the byte stream.

macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident : $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A code this table does not name; carried verbatim.
            Unknown($repr),
        }

        impl $name {
            /// Every named variant, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Maps a wire code to its variant (never fails: unknown codes are kept).
            pub const fn from_code(code: $repr) -> Self {
                match code {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            /// The wire code.
            pub const fn code(self) -> $repr {
                match self {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }

        impl From<$repr> for $name {
            fn from(code: $repr) -> Self {
                Self::from_code(code)
            }
        }
    };
}

code_enum! {
    /// Hardware (device) protocol command codes. Codes shared with the app protocol keep their
    /// hardware meaning here (21 = GROUP, 55 = DEBUG_PRINT, 64 = EVENT_LOG, 65 = EVENT_CLEAR).
    Command: u8 {
        /// Status reply; the length field carries the status and there is no body.
        Response = 0,
        Register = 1,
        /// Legacy device login (lib <= 0.6.0, blynklib).
        Login = 2,
        Redeem = 3,
        HardwareConnected = 4,
        GetToken = 5,
        Ping = 6,
        ActivateDashboard = 7,
        DeactivateDashboard = 8,
        RefreshToken = 9,
        Tweet = 12,
        Email = 13,
        PushNotification = 14,
        Bridge = 15,
        HardwareSync = 16,
        Internal = 17,
        Sms = 18,
        Property = 19,
        Hardware = 20,
        Group = 21,
        LoadProfileGzipped = 24,
        AppSync = 25,
        /// Device login (lib >= 0.6.1, BlynkLib).
        HardwareLogin = 29,
        GetServer = 40,
        Redirect = 41,
        CreateDevice = 42,
        UpdateDevice = 43,
        DeleteDevice = 44,
        GetDevices = 45,
        DebugPrint = 55,
        EventLog = 64,
        EventClear = 65,
        DeviceOffline = 71,
        OutdatedAppNotification = 72,
    }
}

code_enum! {
    /// Status codes carried by RESPONSE frames.
    Status: u16 {
        QuotaLimit = 1,
        IllegalCommand = 2,
        NotRegistered = 3,
        /// Also the answer to a second login on the same connection.
        AlreadyRegistered = 4,
        NotAuthenticated = 5,
        NotAllowed = 6,
        DeviceNotInNetwork = 7,
        NoActiveDashboard = 8,
        InvalidToken = 9,
        IllegalCommandBody = 11,
        GetGraphDataException = 12,
        NotificationInvalidBody = 13,
        NotificationNotAuthorized = 14,
        NotificationError = 15,
        Timeout = 16,
        NoData = 17,
        DeviceWentOffline = 18,
        ServerError = 19,
        NotSupportedVersion = 20,
        EnergyLimit = 21,
        FacebookUserLoginWithPass = 22,
        OperationAccept = 23,
        OperationDecline = 24,
        Ok = 200,
    }
}

impl Command {
    /// True for the two login commands a device may open with (29 and the legacy 2).
    pub const fn is_login(self) -> bool {
        matches!(self, Command::Login | Command::HardwareLogin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in 0..=u8::MAX {
            assert_eq!(Command::from_code(c).code(), c);
        }
        for s in [0u16, 1, 9, 200, 65535] {
            assert_eq!(Status::from_code(s).code(), s);
        }
        assert_eq!(Command::from_code(29), Command::HardwareLogin);
        assert_eq!(Command::from_code(99), Command::Unknown(99));
        assert_eq!(Status::from_code(200), Status::Ok);
        assert!(
            Command::ALL
                .iter()
                .all(|c| !matches!(c, Command::Unknown(_)))
        );
    }
}
