# Install cognimamba into .venv on Windows, then optionally run a job:
#   .\setup.ps1 quickstart [options]   train and try a small model on the built-in stories (offline)
#   .\setup.ps1 test [pytest args]     run the test suite
# torch is installed first and pinned ($env:TORCH_SPEC), so pip never pulls a different build for a range.
param([string]$Job = "", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest = @())
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$Python = if ($env:PYTHON) { $env:PYTHON } else { "python" }
$Torch = if ($env:TORCH_SPEC) { $env:TORCH_SPEC } else { "torch==2.13.0" }
if (-not (Test-Path ".venv\Scripts\python.exe")) { & $Python -m venv .venv; if ($LASTEXITCODE) { exit $LASTEXITCODE } }
& .venv\Scripts\python.exe -m pip install --quiet --disable-pip-version-check $Torch
if ($LASTEXITCODE) { exit $LASTEXITCODE }
& .venv\Scripts\python.exe -m pip install --quiet --disable-pip-version-check -e ".[dev]"
if ($LASTEXITCODE) { exit $LASTEXITCODE }
switch ($Job) {
    "quickstart" { & .venv\Scripts\cogni.exe quickstart @Rest }
    "test" { $env:HF_HUB_OFFLINE = "1"; & .venv\Scripts\python.exe -m pytest -q -n auto @Rest }
    "" { Write-Host "installed: .venv\Scripts\Activate.ps1, then run cogni --help" }
    default { Write-Error "usage: .\setup.ps1 [quickstart|test] [args...]"; exit 2 }
}
exit $LASTEXITCODE
