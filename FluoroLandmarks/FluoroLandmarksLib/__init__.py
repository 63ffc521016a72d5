"""FluoroLandmarks logic, free of Qt: C-arm geometry, DRR synthesis, landmarks, MRML bridge."""
