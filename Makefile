# One command to set up and run the demo, one to test. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAMPLE := FluoroLandmarks/Resources/SampleData
FEMUR_SAMPLE := FemurSegment/Resources/SampleData

.PHONY: setup demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the local CPU build; a bare "torch" pulls GBs of CUDA
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/fluoro-landmarks drr $(SAMPLE)/ProMED_CT_0051.nrrd --landmarks $(SAMPLE)/ProMED_CT_0051_landmarks.mrk.json \
	  --primary-angle 0 90 30 --secondary-angle 0 0 15 --out output/drr
	$(PY) -m FluoroLandmarksLib.preview output/drr --out output/preview
	$(VENV)/bin/fluoro-landmarks drr $(SAMPLE)/ProMED_CT_0051.nrrd --landmarks $(SAMPLE)/ProMED_CT_0051_landmarks.mrk.json \
	  --primary-angle 60 --secondary-angle 10 \
	  --output image --photons 20000 --collimation-circle 140 120 105 --out output/frame
	$(VENV)/bin/fluoro-landmarks detect output/frame/drr.nrrd --geometry output/frame/geometry.json --input-blur 0 --out output/detect
	$(PY) -m FluoroLandmarksLib.preview output/detect --out output/preview_detect
	$(VENV)/bin/fluoro-landmarks drr $(SAMPLE)/ProMED_CT_0051.nrrd --landmarks $(SAMPLE)/ProMED_CT_0051_landmarks.mrk.json \
	  --primary-angle 0 90 --secondary-angle 0 0 --output image --photons 20000 --out output/biplane_frames
	$(VENV)/bin/fluoro-landmarks detect output/biplane_frames/drr_000.nrrd --geometry output/biplane_frames/geometry_000.json \
	  --second-image output/biplane_frames/drr_001.nrrd --second-geometry output/biplane_frames/geometry_001.json --input-blur 0 --out output/biplane
	$(PY) -m FluoroLandmarksLib.preview output/biplane --out output/preview_biplane
	$(VENV)/bin/femur-segment $(FEMUR_SAMPLE)/PelvicRef005_hips.nrrd --out output/femur
	$(PY) -m FemurSegmentLib.preview output/femur --out output/preview_femur

test: setup
	$(PY) -m pytest -q Testing

# Benchmarks need the peers: plastimatch (Debian package) and DiffDRR (PyPI).
bench: setup
	command -v plastimatch >/dev/null || (apt-get update -qq && apt-get install -y -qq plastimatch)
	# DiffDRR's renderer needs only these; its full requirements pull torchvision/timm/pyvista (CUDA torch here).
	$(PY) -m pip install -q --no-deps diffdrr==0.6.1 && $(PY) -m pip install -q fastcore einops scipy torchio
	$(PY) Testing/Benchmarks/drr_speed.py --json output/bench/drr_speed.json

clean:
	rm -rf $(VENV) output
