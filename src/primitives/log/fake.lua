-- `log`'s fake for `runbook test`: there is none to make. Logging acts on nothing outside the
-- run; its lines are the run's events, which a test reads in `r.events`.
return function(_kit, _support) end
