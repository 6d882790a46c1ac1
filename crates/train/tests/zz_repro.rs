use burn::prelude::*;
use burn::server::{RemoteServer, WebSocketTransport};
use burn::tensor::remote::RemoteHost;

fn worker() -> Device {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("ws://{}", listener.local_addr().unwrap());
    let serving = RemoteServer::new([Device::flex()])
        .serve_async(WebSocketTransport::from_listener(listener));
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(serving)
            .unwrap()
    });
    Device::remote_options(&RemoteHost::websocket(&address))
        .init()
        .unwrap()
}

#[test]
fn repro() {
    let device = worker();
    let x = Tensor::<4>::random([2, 3, 5, 5], burn::tensor::Distribution::Default, &device);
    println!(
        "A slice {:?}",
        x.clone()
            .slice([0..2, 0..3, 0..4, 1..5])
            .into_data()
            .shape()
    );
    println!(
        "B cat {:?}",
        Tensor::cat(vec![x.clone(), x.clone()], 0)
            .into_data()
            .shape()
    );
    println!(
        "C pad {:?}",
        x.clone()
            .pad(
                [(0, 0), (0, 0), (1, 1), (1, 1)],
                burn::tensor::ops::PadMode::Constant(0.0)
            )
            .into_data()
            .shape()
    );
    println!(
        "D swap {:?}",
        x.clone()
            .swap_dims(0, 1)
            .reshape([3, 50])
            .into_data()
            .shape()
    );
    println!(
        "E matmul {:?}",
        x.clone()
            .reshape([10, 15])
            .matmul(x.clone().reshape([15, 10]))
            .into_data()
            .shape()
    );
}
