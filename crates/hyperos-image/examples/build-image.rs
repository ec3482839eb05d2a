//! Builds the image from the repository's image/ directory into OUT_DIR,
//! sharing the package cache in image/cache.
//!
//! `cargo run -p hyperos-image --example build-image -- OUT_DIR INIT [BZIMAGE [MODULES_DIR]]`
//!
//! `hyperos image build` is the supported way to build into image/out; this is
//! for working on the builder alone without touching the image other tests use.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(out_dir), Some(init)) = (args.next(), args.next()) else {
        eprintln!("usage: build-image OUT_DIR INIT [BZIMAGE [MODULES_DIR]]");
        std::process::exit(2);
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut opts = hyperos_image::BuildOptions::for_repo(&repo, init.into());
    opts.out_dir = out_dir.into();
    opts.kernel = args.next().map(Into::into);
    opts.modules_dir = args.next().map(Into::into);
    match hyperos_image::build(&opts) {
        Ok(report) => print!("{report}"),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}
