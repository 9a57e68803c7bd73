"""Live frames -> the screen: newest-frame capture, the live loop, the MJPEG stream."""
