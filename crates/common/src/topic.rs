//! Topic names.

use crate::limits::MAX_TOPIC_NAME_LEN;

/// Why a topic name is not legal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name '{0}' is not allowed")]
    Reserved(String),
    #[error("topic name is {len} characters long; the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong { len: usize },
    #[error("topic name '{name}' contains '{ch}'; legal characters are ASCII letters, digits, '.', '_' and '-'")]
    IllegalChar { name: String, ch: char },
}

/// Checks a topic name against Kafka's rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, and
/// neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Reserved(name.to_string()));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    if let Some(ch) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(TopicNameError::IllegalChar { name: name.to_string(), ch });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_legal_names() {
        for name in ["a", "orders", "orders.v1", "my_topic-2", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_illegal_names() {
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert!(matches!(validate_topic_name("."), Err(TopicNameError::Reserved(_))));
        assert!(matches!(validate_topic_name(".."), Err(TopicNameError::Reserved(_))));
        assert!(matches!(validate_topic_name(&"x".repeat(250)), Err(TopicNameError::TooLong { len: 250 })));
        assert!(matches!(validate_topic_name("a/b"), Err(TopicNameError::IllegalChar { ch: '/', .. })));
        assert!(matches!(validate_topic_name("ümlaut"), Err(TopicNameError::IllegalChar { ch: 'ü', .. })));
    }
}
