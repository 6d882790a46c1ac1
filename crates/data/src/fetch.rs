//! Finding a dataset on disk, checking its digests, and downloading it when it is absent.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{
    DataError, DatasetKind,
    cifar::{CIFAR10_FOLDER, CIFAR10_TARBALL},
    dataset::Download,
    integrity::read_verified,
};

/// Environment variable naming the data directory when the config gives none.
pub const DATA_DIR_ENV: &str = "CNN_DATA_DIR";
/// Environment variable that, set to anything but `0`, forbids downloads (air-gapped machines,
/// tests).
pub const OFFLINE_ENV: &str = "CNN_OFFLINE";

/// The folders searched for a dataset, in order: the config's `data_dir`, then
/// `$CNN_DATA_DIR`, then `./data`; each holds one sub-folder per dataset.
fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = configured.map(Path::to_path_buf).into_iter().collect();
    if let Some(env) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(env));
    }
    dirs.push(PathBuf::from("data"));
    dirs
}

/// Finds the folder holding all of `kind`'s files: `<dir>/<dataset>` for each data folder, then
/// the system package's folder. When none does, downloads them from the dataset's mirrors into
/// the first data folder, verifying every file. The error, when neither works, lists the folders
/// searched and how to get the files.
pub fn locate(
    kind: DatasetKind,
    configured: Option<&Path>,
    progress: bool,
) -> Result<PathBuf, DataError> {
    let dirs = candidates(configured);
    let mut folders: Vec<PathBuf> = dirs.iter().map(|d| d.join(kind.folder())).collect();
    folders.extend(kind.system_folders().iter().map(PathBuf::from));
    if let Some(folder) = folders.iter().find(|f| kind.is_complete(f)) {
        return Ok(folder.clone());
    }
    let searched = folders
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let target = dirs[0].join(kind.folder());
    let missing = |name: &str, reason: String| DataError::Missing {
        name: name.to_string(),
        searched: searched.clone(),
        reason,
    };
    let what = match kind {
        DatasetKind::FashionMnist => {
            "the official files (on Debian: apt-get install dataset-fashion-mnist)".to_string()
        }
        DatasetKind::Cifar10 => format!("{CIFAR10_TARBALL} or its extracted {CIFAR10_FOLDER}/"),
        _ => "the official files".to_string(),
    };
    let advice = format!(
        "Put {what} in one of those folders (or set data_dir in the config, or {DATA_DIR_ENV})"
    );
    if kind.mirrors().is_empty() {
        return Err(missing(
            &format!("{} files", kind.name()),
            format!(
                "{} is not downloaded but ships with the project (samples/{}/); set data_dir \
                 or --data-dir to the folder holding it (samples in the project)",
                kind.name(),
                kind.folder()
            ),
        ));
    }
    if std::env::var_os(OFFLINE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
        let first = &kind.downloads(&target)[0];
        return Err(missing(
            &first.file,
            format!(
                "downloads are off (${OFFLINE_ENV} is set; the file is at {}). {advice}",
                first.urls.join(" or ")
            ),
        ));
    }
    fetch_into(&target, kind.downloads(&target), progress).map_err(|(file, e)| match e {
        DataError::Io { .. } => e,
        e => missing(&file, format!("the download failed: {e}. {advice}")),
    })?;
    Ok(target)
}

/// Downloads `downloads` into `folder`, creating it. On a failure, the file that failed and
/// why; the folders this made are removed again where still empty, so that a failed command
/// leaves nothing behind.
fn fetch_into(
    folder: &Path,
    downloads: Vec<Download>,
    progress: bool,
) -> Result<(), (String, DataError)> {
    // Innermost first, as they are removed.
    let created: Vec<PathBuf> = folder
        .ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .map(Path::to_path_buf)
        .collect();
    let io = |source| DataError::Io {
        path: folder.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(folder).map_err(|e| (folder.display().to_string(), io(e)))?;
    for download in downloads {
        let dest = folder.join(&download.file);
        if let Err(e) = download_verified(&download.urls, &dest, download.digests, progress) {
            for dir in &created {
                let _ = std::fs::remove_dir(dir);
            }
            return Err((download.file, e));
        }
    }
    Ok(())
}

/// Downloads the first of `urls` that answers into `dest`, showing a progress bar when
/// `progress` is set. The body goes to a temporary file beside `dest`, is checked against
/// `digests`, and only then renamed into place: an interrupted or corrupt download never leaves
/// a file that looks valid.
pub fn download_verified(
    urls: &[String],
    dest: &Path,
    digests: &[&str],
    progress: bool,
) -> Result<(), DataError> {
    let mut failures = Vec::new();
    for url in urls {
        match download_one(url, dest, digests, progress) {
            Ok(()) => return Ok(()),
            Err(e) => failures.push(e),
        }
    }
    // One address: its own error. Several: each one's, so that none tried goes unsaid.
    match failures.len() {
        0 => Err(DataError::Download {
            url: dest.display().to_string(),
            reason: "no address to download from".into(),
        }),
        1 => Err(failures.remove(0)),
        _ => Err(DataError::Download {
            url: "every address".into(),
            reason: failures
                .iter()
                .map(|e| match e {
                    DataError::Download { url, reason } => format!("{url}: {reason}"),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

fn download_one(url: &str, dest: &Path, digests: &[&str], progress: bool) -> Result<(), DataError> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bar = if progress {
        indicatif::ProgressBar::new(length.unwrap_or(0))
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(
        dest.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
    );

    let temp = dest.with_extension("part");
    let io = |source| DataError::Io {
        path: temp.clone(),
        source,
    };
    let result = (|| {
        let mut file = std::fs::File::create(&temp).map_err(io)?;
        let mut reader = response.body_mut().as_reader();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            file.write_all(&buffer[..n]).map_err(io)?;
            bar.inc(n as u64);
        }
        file.sync_all().map_err(io)?;
        drop(file);
        read_verified(&temp, digests)?;
        std::fs::rename(&temp, dest).map_err(|source| DataError::Io {
            path: dest.to_path_buf(),
            source,
        })
    })();
    bar.finish_and_clear();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cifar::CIFAR10_MD5;
    use crate::cifar::CifarBinary;
    use crate::integrity::{read_verified, sha256_hex};
    use crate::testing::{gzip, serve, tarball, write_dir};

    #[test]
    fn a_failed_download_leaves_no_folder_behind() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("made/for/mnist");
        // Port 1 on the loopback refuses at once; both addresses are named in the error.
        let urls = ["http://127.0.0.1:1/a.gz", "http://127.0.0.1:1/b.gz"].map(String::from);
        let download = Download {
            file: "a.gz".into(),
            urls: urls.to_vec(),
            digests: &[],
        };
        let (file, error) = fetch_into(&folder, vec![download], false).unwrap_err();
        assert_eq!(file, "a.gz");
        let error = error.to_string();
        assert!(
            error.contains("/a.gz: ") && error.contains("/b.gz: "),
            "{error}"
        );
        assert!(!root.path().join("made").exists());
        assert!(root.path().exists());
    }

    #[test]
    fn loopback_download_is_verified_and_renamed() {
        let content = b"the real content".to_vec();
        let digest = sha256_hex(&content);
        let url = serve(gzip(&content), 1);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file.gz");
        download_verified(&[url], &dest, &[&digest], false).unwrap();
        assert_eq!(read_verified(&dest, &[&digest]).unwrap(), content);
        assert!(!dest.with_extension("part").exists());
    }

    #[test]
    fn corrupted_download_is_rejected_and_not_kept() {
        let digest = sha256_hex(b"the real content");
        let url = serve(gzip(b"the real contenT"), 1);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file.gz");
        let err = download_verified(&[url], &dest, &[&digest], false).unwrap_err();
        assert!(matches!(err, DataError::Digest { .. }), "{err}");
        assert!(!dest.exists() && !dest.with_extension("part").exists());
    }

    #[test]
    fn locate_uses_the_configured_folder_and_lists_the_searched_ones() {
        let samples = Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .join("../../samples");
        let found = locate(DatasetKind::MnistSample, Some(&samples), false).unwrap();
        assert_eq!(found, samples.join("mnist_sample"));
        let empty = tempfile::tempdir().unwrap();
        let err = locate(DatasetKind::MnistSample, Some(empty.path()), false)
            .unwrap_err()
            .to_string();
        let expected = empty.path().join("mnist_sample").display().to_string();
        assert!(
            err.contains(&expected) && err.contains("data/mnist_sample"),
            "{err}"
        );
    }

    #[test]
    fn downloaded_tarball_is_verified_renamed_and_read() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("source");
        write_dir(&source, 3);
        let body = tarball(&source);
        let dest = root.path().join(CIFAR10_TARBALL);
        let url = serve(body.clone(), 2);
        let md5 = crate::integrity::md5_hex(&body);
        // The official digest rejects the generated archive, and nothing is left behind.
        let err = download_verified(std::slice::from_ref(&url), &dest, &[CIFAR10_MD5], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        assert!(!dest.exists() && !dest.with_extension("part").exists());
        download_verified(&[url], &dest, &[&md5], false).unwrap();
        let cifar = CifarBinary::from_tarball(&dest, &[&md5]).unwrap();
        assert_eq!(cifar.splits.train_images.count, 15);
    }
}
