//! The state machine's enums as database columns: stored as their text
//! names (`trying`, `not_required`, ...), the same on every database, so a
//! row struct can name them as fields and `sqlx` decodes them. A name this
//! version does not know is a decode error, which the store reports as
//! [`StoreError::Corrupt`](super::StoreError::Corrupt).
//!
//! The impls live here rather than as derives in `machine`, which stays
//! free of I/O dependencies.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

use crate::machine::{CallStatus, Mode, Status};

macro_rules! text_column {
    ($ty:ty, $what:literal) => {
        impl<DB: Database> Type<DB> for $ty
        where
            str: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: Database> Decode<'r, DB> for $ty
        where
            &'r str: Decode<'r, DB>,
        {
            fn decode(value: DB::ValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<DB>>::decode(value)?;
                <$ty>::parse(text).ok_or_else(|| format!("{} {text:?}", $what).into())
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            &'static str: Encode<'q, DB>,
        {
            fn encode_by_ref(&self, buf: &mut DB::ArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&'static str as Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_column!(Mode, "mode");
text_column!(Status, "status");
text_column!(CallStatus, "call status");
