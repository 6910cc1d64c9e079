//! Routing of `/v2/<name>/...`. Repository names contain slashes, so the
//! path is parsed from the right: the last segments say what is addressed
//! and everything before them is the name.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Catalog,
    Tags {
        name: &'a str,
    },
    Manifest {
        name: &'a str,
        reference: &'a str,
    },
    Blob {
        name: &'a str,
        digest: &'a str,
    },
    /// `id` is empty for `POST /v2/<name>/blobs/uploads/`.
    Upload {
        name: &'a str,
        id: &'a str,
    },
    Referrers {
        name: &'a str,
        digest: &'a str,
    },
}

/// Parse the part of the path after `/v2/`. `None` for paths the API does
/// not have. Every route ends in at least two segments after the name, so
/// the last three are read from the right and the name is what precedes
/// them, a slice of the path (parsing allocates nothing: it runs on every
/// request).
pub fn parse(rest: &str) -> Option<Route<'_>> {
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let mut from_right = rest.rsplit('/');
    let (last, second, third) = (from_right.next()?, from_right.next()?, from_right.next()?);
    let four_or_more = from_right.next().is_some();
    // The path without its last `k` segments and the slash before each.
    let name = |k: usize| {
        let cut: usize = [last, second, third][..k].iter().map(|s| s.len() + 1).sum();
        &rest[..rest.len() - cut]
    };
    if second == "tags" && last == "list" {
        return Some(Route::Tags { name: name(2) });
    }
    if four_or_more && third == "blobs" && second == "uploads" {
        return Some(Route::Upload {
            name: name(3),
            id: last,
        });
    }
    if second == "blobs" && last == "uploads" {
        return Some(Route::Upload {
            name: name(2),
            id: "",
        });
    }
    match second {
        "manifests" => Some(Route::Manifest {
            name: name(2),
            reference: last,
        }),
        "blobs" => Some(Route::Blob {
            name: name(2),
            digest: last,
        }),
        "referrers" => Some(Route::Referrers {
            name: name(2),
            digest: last,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_parse_from_the_right() {
        assert_eq!(parse("_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse("a/b/c/tags/list"),
            Some(Route::Tags { name: "a/b/c" })
        );
        assert_eq!(
            parse("team/app/manifests/v1"),
            Some(Route::Manifest {
                name: "team/app",
                reference: "v1"
            })
        );
        assert_eq!(
            parse("x/blobs/uploads/"),
            Some(Route::Upload { name: "x", id: "" })
        );
        assert_eq!(
            parse("x/blobs/uploads"),
            Some(Route::Upload { name: "x", id: "" })
        );
        assert_eq!(
            parse("x/y/blobs/uploads/abc"),
            Some(Route::Upload {
                name: "x/y",
                id: "abc"
            })
        );
        assert_eq!(
            parse("x/blobs/sha256:00"),
            Some(Route::Blob {
                name: "x",
                digest: "sha256:00"
            })
        );
        // A repository may itself be called "manifests".
        assert_eq!(
            parse("manifests/manifests/t"),
            Some(Route::Manifest {
                name: "manifests",
                reference: "t"
            })
        );
        assert_eq!(
            parse("x/referrers/d"),
            Some(Route::Referrers {
                name: "x",
                digest: "d"
            })
        );
        assert_eq!(parse("x/unknown/y"), None);
        assert_eq!(parse("x"), None);
        assert_eq!(parse("tags/list"), None, "no name");
        assert_eq!(parse("blobs/uploads/abc"), None, "no name");
        assert_eq!(
            parse("/tags/list"),
            Some(Route::Tags { name: "" }),
            "an empty name parses; the handler refuses it"
        );
    }
}
