//! Random, memorable hostnames, as the 2016 CLI gave its VMs.

/// A fresh hostname such as `merry-otter`: two words, a valid DNS label.
pub fn random_hostname() -> String {
    petname::petname(2, "-").unwrap_or_else(|| "hyperos".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostnames_are_valid_labels() {
        for _ in 0..50 {
            let name = super::random_hostname();
            hyperos_proto::config::validate_hostname(&name).unwrap();
            assert!(name.contains('-'));
        }
    }
}
