"""cloud-image-app's domain: settings, conversion, storage, labeling, catalog and the upload pipeline."""
