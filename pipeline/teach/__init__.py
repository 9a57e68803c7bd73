"""The browser teaching app: record examples, train in the background, test the new model live."""
