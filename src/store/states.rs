//! The domain states ([`crate::domain`]) as SQL text. A value the schema's `CHECK` would not
//! let in is reported as a conversion error when read, never silently mapped to another state.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::domain::{
    AttemptOutcome, ErrorKind, EventState, Role, RunDelivery, RunSource, RunStatus, StepStatus,
};

macro_rules! sql_text {
    ($($name:ident),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(concat!("unknown ", stringify!($name), " {:?}"), text).into(),
                    )
                })
            }
        }
    )+};
}

sql_text!(
    RunStatus,
    RunSource,
    RunDelivery,
    StepStatus,
    EventState,
    AttemptOutcome,
    ErrorKind,
    Role
);

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn states_go_in_and_out_as_text() {
        let conn = Connection::open_in_memory().unwrap();
        let text: String = conn
            .query_row("SELECT ?1", [ErrorKind::TooLarge], |r| r.get(0))
            .unwrap();
        assert_eq!(text, "too_large");
        let back: StepStatus = conn
            .query_row("SELECT 'interrupted'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(back, StepStatus::Interrupted);
        let unknown = conn.query_row("SELECT 'sending'", [], |r| r.get::<_, EventState>(0));
        assert!(
            unknown.is_err(),
            "a state the schema forbids must not read as another"
        );
        let not_text = conn.query_row("SELECT 1", [], |r| r.get::<_, RunStatus>(0));
        assert!(not_text.is_err());
    }
}
