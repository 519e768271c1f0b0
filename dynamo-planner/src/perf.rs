//! Performance models: what one worker achieves, measured by `profile`, interpolated.
