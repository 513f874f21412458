"""cloud-image-app's domain: settings, conversion, storage, labeling, catalog, pipeline."""
